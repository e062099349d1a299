"""Build encoders from unlabelled text."""
