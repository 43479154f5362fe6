"""`transformer_encoder.training`: train the encoder with accelerate on datasets.

    accelerate launch -m transformer_encoder.training mlm --output_dir runs/mlm
    python -m transformer_encoder.training sequence-classification --model_name_or_path runs/mlm ...

`python -m transformer_encoder.training --help` lists every option.
"""
