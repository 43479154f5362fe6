"""A student started from its teacher's own weights: fewer layers, as DistilBERT (Sanh et al. 2019) takes every
other one, and, where the student is narrower, the teacher's residual stream seen through a projection.

Width. `P` (d_s × d_t, orthonormal rows) spans the d_s principal directions of the teacher's hidden states on
sample text. Every weight that reads the stream reads `P^T y`, every weight that writes it writes `P ·`:
embeddings `E P^T`, `W_Q P^T`, `P W_O`, `W_1 P^T`, `P W_2`, the classifier `W_c P^T`. Attention keeps whole heads
(the student's head size is the teacher's) and the feed-forward keeps whole neurons: the ones that write most into
the stream. A layer norm over d_s numbers is not the teacher's over d_t seen through P; its gain is the diagonal of
`P diag(γ) P^T`, scaled by √(d_t / d_s), the norm a projected stream loses. The student starts close to the
teacher, not equal to it: distillation does the rest.
"""

import torch

from .errors import UsageError


def check_student_shape(student_config, teacher_config):
    """Refuse, naming the option, a student that cannot be cut from this teacher."""
    pairs = {
        "hidden_size": (student_config.hidden_size, teacher_config.hidden_size),
        "num_hidden_layers": (student_config.num_hidden_layers, teacher_config.num_hidden_layers),
        "intermediate_size": (student_config.intermediate_size, teacher_config.intermediate_size),
        "num_attention_heads": (student_config.num_attention_heads, teacher_config.num_attention_heads),
    }
    for name, (theirs, teachers) in pairs.items():
        if theirs > teachers:
            raise UsageError(
                f"--student_init teacher cuts the student from the teacher: its {name} {theirs} cannot exceed the "
                f"teacher's {teachers}."
            )
    if student_config.head_dim != teacher_config.head_dim:
        raise UsageError(
            f"--student_init teacher keeps whole heads of {teacher_config.head_dim} dimensions: give "
            f"--num_attention_heads {student_config.hidden_size // teacher_config.head_dim} for --hidden_size "
            f"{student_config.hidden_size}."
        )
    for name in ("hidden_act", "norm_first", "position_embedding_type", "type_vocab_size", "embedding_layer_norm"):
        if getattr(student_config, name) != getattr(teacher_config, name):
            raise UsageError(
                f"--student_init teacher copies the teacher's blocks: leave --{name} as the teacher's "
                f"({getattr(teacher_config, name)})."
            )


def kept_layers(student_layers: int, teacher_layers: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included: 6 → 3 keeps 0, 2, 5; 12 → 6 keeps 0, 2, 4, 7, 9, 11."""
    if student_layers == 1:
        return [teacher_layers - 1]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


@torch.no_grad()
def stream_projection(teacher, batches, width: int) -> torch.Tensor:
    """P (width × d_t): the principal directions of the teacher's hidden states (every layer, real tokens only) on
    `batches` of its inputs. The identity where the widths match."""
    d_t = teacher.config.hidden_size
    if width == d_t:
        return torch.eye(d_t)
    states = []
    teacher.eval()
    device = next(teacher.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = teacher(**batch, output_hidden_states=True)
        real = batch["attention_mask"].bool()
        states += [h[real].float().cpu() for h in out.hidden_states]
    x = torch.cat(states).double()  # a few thousand rows of d_t numbers
    _, _, v = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return v[:width].float()


@torch.no_grad()
def init_from_teacher(student, teacher, projection: torch.Tensor):
    """Copy the teacher's embeddings, kept layers and head into the student (both ForSequenceClassification)."""
    check_student_shape(student.config, teacher.config)
    p = projection
    norm_scale = (teacher.config.hidden_size / student.config.hidden_size) ** 0.5
    s, t = student.model, teacher.model

    for name in ("token_embeddings", "position_embeddings", "token_type_embeddings"):
        source, target = getattr(t.embeddings, name, None), getattr(s.embeddings, name, None)
        if source is not None and target is not None:
            rows = min(source.weight.shape[0], target.weight.shape[0])
            target.weight[:rows] = source.weight[:rows] @ p.T
    _layer_norm(s.embeddings.norm, t.embeddings.norm, p, norm_scale)

    for target, index in zip(s.layers, kept_layers(len(s.layers), len(t.layers))):
        source = t.layers[index]
        heads = _strongest(source.attention.out_proj.weight, t.config.head_dim, student.config.num_attention_heads)
        for name in ("q_proj", "k_proj", "v_proj"):
            _linear(getattr(target.attention, name), getattr(source.attention, name), rows=heads, p_in=p)
        _linear(target.attention.out_proj, source.attention.out_proj, columns=heads, p_out=p)
        neurons = _strongest(source.feed_forward.fc2.weight, 1, student.config.intermediate_size)
        _linear(target.feed_forward.fc1, source.feed_forward.fc1, rows=neurons, p_in=p)
        _linear(target.feed_forward.fc2, source.feed_forward.fc2, columns=neurons, p_out=p)
        _layer_norm(target.attention_norm, source.attention_norm, p, norm_scale)
        _layer_norm(target.feed_forward_norm, source.feed_forward_norm, p, norm_scale)

    _layer_norm(s.final_norm, t.final_norm, p, norm_scale)
    if s.pooler is not None and t.pooler is not None:
        _linear(s.pooler.dense, t.pooler.dense, p_in=p, p_out=p)
    _linear(student.classifier, teacher.classifier, p_in=p)


def _strongest(weight: torch.Tensor, group: int, keep: int) -> torch.Tensor:
    """The indices (in the teacher's order) of the `keep` column groups of `weight` (out × in) with the largest
    norm: the heads (group = head size) or neurons (group = 1) that write most into the stream."""
    norms = weight.reshape(weight.shape[0], -1, group).pow(2).sum((0, 2))
    chosen = norms.topk(keep).indices.sort().values
    return (chosen[:, None] * group + torch.arange(group)).flatten()


def _linear(target, source, rows=None, columns=None, p_in=None, p_out=None):
    """target ← P_out · source[rows, columns] · P_in^T, bias P_out · b[rows]."""
    weight, bias = source.weight, source.bias
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    if columns is not None:
        weight = weight[:, columns]
    if p_in is not None:
        weight = weight @ p_in.T
    if p_out is not None:
        weight, bias = p_out @ weight, p_out @ bias
    target.weight.copy_(weight)
    target.bias.copy_(bias)


def _layer_norm(target, source, p, scale: float):
    if target is None or source is None:
        return
    target.weight.copy_((p * p) @ source.weight * scale)
    target.bias.copy_(p @ source.bias)
