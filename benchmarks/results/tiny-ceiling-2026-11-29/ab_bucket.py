"""Tiny sentence batches, attention on the real tokens: one SDPA call per sequence (the model's `attend_each_sequence`)
against sequences sorted by length and grouped, padded within a group to its longest, one SDPA call per group with a
mask (a group grows while its padding stays under WASTE of its tokens). Alternated in one process, medians.
Usage: python benchmarks/results/tiny-ceiling-2026-11-29/ab_bucket.py tiny ROUNDS WASTE"""
import importlib.util, statistics, sys, time
from pathlib import Path
import torch
from torch import nn
import transformer_encoder as te
from transformer_encoder.modeling import modeling_transformer_encoder as M
spec = importlib.util.spec_from_file_location("bench", str(Path(__file__).resolve().parents[2] / "benchmark.py"))
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
size = sys.argv[1]; rounds = int(sys.argv[2]); waste = float(sys.argv[3]) if len(sys.argv) > 3 else 0.15
s = bench.SIZES[size]
torch.manual_seed(0)
cfg = te.TransformerEncoderConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"], intermediate_size=s["ffn"], hidden_act="gelu", position_embedding_type="learned", attn_implementation="sdpa")
model = te.TransformerEncoderModel(cfg).eval()
batches = bench.variable_batches(bench.sentence_lengths(s["vocab"], bench.DATA), s["vocab"], "cpu")
if size == "base": batches = batches[:6]
tokens = sum(int(m.sum()) for _, m in batches)
orig = M.TransformerEncoderAttention.attend_each_sequence

def plan_groups(lengths, waste):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups, cur = [], []
    for i in order:
        cand = cur + [i]
        if cur and lengths[cand[0]] * len(cand) > (1 + waste) * sum(lengths[j] for j in cand):
            groups.append(cur); cur = [i]
        else:
            cur = cand
    groups.append(cur)
    starts = [0]
    for n in lengths[:-1]: starts.append(starts[-1] + n)
    plan = []
    for g in groups:
        L = lengths[g[0]]
        if len(g) == 1:
            plan.append((None, None, None, starts[g[0]], L)); continue
        idx = torch.zeros(len(g), L, dtype=torch.long); mask = torch.zeros(len(g), L, dtype=torch.bool)
        for r, i in enumerate(g):
            idx[r, :lengths[i]] = torch.arange(starts[i], starts[i] + lengths[i]); mask[r, :lengths[i]] = True
        flat = mask.flatten()
        plan.append((idx.flatten(), mask[:, None, None, :] if not mask.all() else None, (flat.nonzero().squeeze(-1), idx.flatten()[flat]), None, L))
    return plan

def bucket(self, q, k, v, position_embeddings, real_positions):
    rp = real_positions
    if not hasattr(rp, "_plan"): rp._plan = plan_groups(rp.lengths, waste)
    n = q.shape[0]; h, dk = self.num_heads, self.d_k
    out = q.new_empty(n, h * dk)
    for idx, mask, scatter, start, L in rp._plan:
        if idx is None:
            sl = slice(start, start + L)
            qi, ki, vi = (x[sl].view(1, L, h, dk).transpose(1, 2) for x in (q, k, v))
            out[sl] = nn.functional.scaled_dot_product_attention(qi, ki, vi, scale=self.scaling)[0].transpose(0, 1).flatten(1)
            continue
        g = idx.numel() // L
        qg, kg, vg = (x.index_select(0, idx).view(g, L, h, dk).transpose(1, 2) for x in (q, k, v))
        o = nn.functional.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, scale=self.scaling)
        o = o.transpose(1, 2).reshape(g * L, h * dk)
        out.index_copy_(0, scatter[1], o.index_select(0, scatter[0]))
    return out

def run():
    with torch.inference_mode():
        return [model(i, attention_mask=m).last_hidden_state for i, m in batches]
variants = {"split": orig, "bucket": bucket}
outs = {}
for name, f in variants.items():
    M.TransformerEncoderAttention.attend_each_sequence = f; outs[name] = run()
for a, b, bb in zip(outs["split"], outs["bucket"], batches):
    m = bb[1].bool()
    assert torch.allclose(a[m], b[m], atol=1e-4), (a[m] - b[m]).abs().max()
times = {n: [] for n in variants}
for r in range(rounds):
    for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
        M.TransformerEncoderAttention.attend_each_sequence = variants[name]
        time.sleep(0.05)
        t = time.perf_counter(); run(); times[name].append(time.perf_counter() - t)
for name, ts in times.items():
    print(size, name, f"waste {waste} median {tokens / statistics.median(ts):.0f} tok/s  best {tokens / min(ts):.0f}")
