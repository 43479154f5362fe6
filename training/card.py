"""The model card (README.md with Hub metadata) written next to a trained model."""

import json

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PIPELINE_TAGS = {
    "mlm": "fill-mask",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
}
TASK_NAMES = {
    "mlm": "Masked language modeling",
    "sequence-classification": "Text classification",
    "token-classification": "Token classification",
}


def write_model_card(path, args, dataset_label: str, metrics: dict, settings: dict, model_name: str):
    headline = {"mlm": "perplexity", "sequence-classification": "accuracy", "token-classification": "f1"}[args.task]
    eval_results = None
    if headline in metrics:
        eval_results = [
            EvalResult(
                task_type=PIPELINE_TAGS[args.task],
                task_name=TASK_NAMES[args.task],
                dataset_type=args.dataset_name or "local",
                dataset_name=dataset_label,
                metric_type=headline,
                metric_value=round(float(metrics[headline]), 4),
            )
        ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS[args.task],
        tags=["transformer-encoder", PIPELINE_TAGS[args.task], "custom_code"],
        datasets=[args.dataset_name] if args.dataset_name else None,
        metrics=sorted(k for k in metrics if k in ("accuracy", "f1", "perplexity")) or None,
        model_name=model_name,
        eval_results=eval_results,
    )
    body = f"""
# {model_name}

A Transformer encoder (*Attention Is All You Need*) trained with
[transformer-encoder](https://pypi.org/project/transformer-encoder/): {TASK_NAMES[args.task].lower()} on
{dataset_label}.

## Use

```python
from transformers import pipeline
pipe = pipeline("{PIPELINE_TAGS[args.task]}", model="{model_name}", trust_remote_code=True)
```

The folder holds its own model code, so `trust_remote_code=True` loads it without installing the package
(the code needs transformers >= 5).

## Final evaluation

```json
{json.dumps(metrics, indent=2, sort_keys=True)}
```

## Training settings

```json
{json.dumps(settings, indent=2, sort_keys=True, default=str)}
```
"""
    ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").save(path)
