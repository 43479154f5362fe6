"""`transformer_encoder.training`: training the encoder with accelerate on datasets."""
