"""The three projections W_Q, W_K, W_V as three linear maps (the model) against one fused map whose weight is the three
concatenated: precomputed once ("fused"), or concatenated at every call ("fused_cat"). Sentence batches, alternated
in one process, medians. Usage: python benchmarks/results/tiny-ceiling-2026-11-29/ab_qkv.py tiny ROUNDS variable"""
import importlib.util, statistics, sys, time
from pathlib import Path
import torch
from torch import nn
import transformer_encoder as te
from transformer_encoder.modeling import modeling_transformer_encoder as M
spec = importlib.util.spec_from_file_location("bench", str(Path(__file__).resolve().parents[2] / "benchmark.py"))
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
size, rounds, workload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = bench.SIZES[size]
torch.manual_seed(0)
cfg = te.TransformerEncoderConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"], intermediate_size=s["ffn"], hidden_act="gelu", position_embedding_type="learned", attn_implementation="sdpa")
model = te.TransformerEncoderModel(cfg).eval()
if workload == "variable":
    batches = bench.variable_batches(bench.sentence_lengths(s["vocab"], bench.DATA), s["vocab"], "cpu")
else:
    batches = bench.fixed_batches(s["vocab"], "cpu", 16, 128, 2)
if size == "base": batches = batches[:4]
tokens = sum(int(m.sum()) for _, m in batches)
orig = M.TransformerEncoderAttention.forward
for layer in model.layers if hasattr(model, "layers") else model.encoder.layers:
    a = layer.attention if hasattr(layer, "attention") else layer.self_attn
    a._w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach()
    a._b = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach()
def fused(self, hidden_states, attention_mask=None, position_embeddings=None, real_positions=None, **kw):
    q, k, v = nn.functional.linear(hidden_states, self._w, self._b).chunk(3, -1)
    if real_positions is not None and real_positions.lengths is not None:
        return self.out_proj(self.attend_each_sequence(q, k, v, position_embeddings, real_positions)), None
    raise NotImplementedError
def fused_cat(self, hidden_states, attention_mask=None, position_embeddings=None, real_positions=None, **kw):
    w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]); b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
    q, k, v = nn.functional.linear(hidden_states, w, b).chunk(3, -1)
    if real_positions is not None and real_positions.lengths is not None:
        return self.out_proj(self.attend_each_sequence(q, k, v, position_embeddings, real_positions)), None
    raise NotImplementedError
def run():
    with torch.inference_mode():
        return [model(i, attention_mask=m).last_hidden_state for i, m in batches]
variants = {"separate": orig, "fused": fused, "fused_cat": fused_cat}
outs = {}
for name, f in variants.items():
    M.TransformerEncoderAttention.forward = f; outs[name] = run()
for name in variants:
    for a, b, bb in zip(outs["separate"], outs[name], batches):
        m = bb[1].bool(); assert torch.allclose(a[m], b[m], atol=1e-4)
times = {n: [] for n in variants}
for r in range(rounds):
    for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
        M.TransformerEncoderAttention.forward = variants[name]
        time.sleep(0.05)
        t = time.perf_counter(); run(); times[name].append(time.perf_counter() - t)
for name, ts in times.items():
    print(size, workload, name, f"median {tokens / statistics.median(ts):.0f} tok/s  best {tokens / min(ts):.0f}")
