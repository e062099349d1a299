"""Sharing a model: the model card (`model_card`: the template filled with what training recorded,
`card_training`) and pushing to the Hugging Face Hub (`push`)."""
