"""The model card (README.md with Hub metadata) written next to a trained model."""

import json

from huggingface_hub import EvalResult, ModelCard, ModelCardData


def write_model_card(path, task, args, columns: dict, metrics: dict, settings: dict, model_name: str):
    eval_results = None
    headline = next((m for m in (task.metric, *task.card_metrics) if m in metrics), None)  # regression: spearmanr
    if headline is not None:
        eval_results = [
            EvalResult(
                task_type=task.pipeline_tag or task.name,
                task_name=task.title,
                dataset_type=args.dataset_name or "local",
                dataset_name=args.dataset_label,
                metric_type=headline,
                metric_value=round(float(metrics[headline]), 4),
            )
        ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task.pipeline_tag,
        tags=["transformer-encoder", *task.card_tags(), "custom_code"],
        datasets=[args.dataset_name] if args.dataset_name else None,
        metrics=[name for name in task.card_metrics if name in metrics] or None,
        model_name=model_name,
        eval_results=eval_results,
    )
    read = ", ".join(f"{role} = `{column}`" for role, column in columns.items())
    body = f"""
# {model_name}

A Transformer encoder (*Attention Is All You Need*) trained with
[transformer-encoder](https://pypi.org/project/transformer-encoder/): {task.title.lower()} on
{args.dataset_label} (columns: {read}). {task.card_notes(args, metrics)}

## Use

{task.card_usage(model_name)}

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
