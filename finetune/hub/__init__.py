"""Sharing a model: the model card (template + what training recorded) and pushing to the Hugging Face Hub."""
