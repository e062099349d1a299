"""Fine-tuning: the loop and its checkpoints and run directory, optimizer and schedule, losses,
freezing and LoRA, the TF-IDF branch, distillation, building the model from the data and arguments."""
