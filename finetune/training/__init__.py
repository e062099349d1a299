"""Fine-tuning, in the order a recipe runs it: start (`start`: accelerator, logging, seed, trackers),
the run directory and its lock (`run_directory`), the model built from the data and arguments
(`builders`), freezing and LoRA, the optimizer and schedule (`optimization`), the loop and its
checkpoints (`loop`, `checkpointing`), then the best model tested and written out (`phases`). Beside
them: losses, regularisers, the TF-IDF branch, distillation, interruptions, distributed checks."""
