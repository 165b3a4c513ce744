"""From labelled turns to a shipped model: dataset builder, synthetic turns, fine-tuning, packaging."""
