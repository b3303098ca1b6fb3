"""Write a tiny llama-architecture GGUF model that the real llama-server loads.

Test fixture, not a real model: 2 layers, n_embd 64, a SentencePiece-style vocabulary
with byte fallback and a ChatML chat template, F32 weights from a fixed seed (so the
file is byte-identical on every run). Every token embedding shares one large component
and the output rows of the printable pieces point along it, so whatever the random rest
of the network does, the sampled text is printable words; EOS and control tokens point
the other way, so generation runs until `max_tokens` (clients must send it).

Other shapes (for the memory estimates, cortex_app/engines/memory.py): a SHAPE such as
`embd=256,layers=4,heads=8,kv_heads=2,ff=768,vocab=2000,type=f16` sets the width, depth,
heads (fewer KV heads: grouped-query attention), feed-forward width, extra vocabulary pieces
and the weights' type (f32 or f16; norms stay f32).

Usage: python make_tiny_gguf.py OUT.gguf [CONTEXT] [SHAPE]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np
from gguf import GGUFWriter, TokenType

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 256
N_CTX = 256
SEED = 20261127


@dataclass(frozen=True)
class Shape:
    embd: int = N_EMBD
    layers: int = N_LAYER
    heads: int = N_HEAD
    kv_heads: int = N_HEAD
    ff: int = N_FF
    vocab: int = 0  # extra NORMAL pieces beyond the fixed vocabulary
    type: str = "f32"

    @classmethod
    def parse(cls, text: str) -> "Shape":
        values = dict(part.split("=", 1) for part in text.split(",") if part)
        return replace(cls(), **{k: (v if k == "type" else int(v)) for k, v in values.items()})


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

WORDS = (
    "the quick brown fox jumps over lazy dog cortex model engine server token "
    "hello world tiny test llama ready health stream chunk alpha beta gamma delta"
).split()


def vocabulary(extra: int = 0) -> tuple[list[str], list[float], list[int], list[bool]]:
    """Tokens, scores, types and a 'printable' flag for each token."""
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL]
    printable = [False] * 5
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(TokenType.BYTE)
        printable.append(False)
    pieces = [f"\u2581{w}" for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz") + ["\u2581"]
    pieces += [f"\u2581x{i}" for i in range(extra)]
    for p in pieces:
        tokens.append(p)
        types.append(TokenType.NORMAL)
        printable.append(True)
    # SentencePiece scores: longer pieces first when merging.
    scores = [0.0 if t != TokenType.NORMAL else -float(i) for i, t in enumerate(types)]
    return tokens, scores, [int(t) for t in types], printable


def write(path: str, n_ctx: int = N_CTX, shape: Shape = Shape()) -> None:
    rng = np.random.default_rng(SEED)
    tokens, scores, types, printable = vocabulary(shape.vocab)
    n_vocab = len(tokens)
    N_EMBD, N_LAYER, N_HEAD, N_FF = shape.embd, shape.layers, shape.heads, shape.ff  # noqa: N806
    head_dim = N_EMBD // N_HEAD
    kv_width = head_dim * shape.kv_heads
    wtype = {"f32": np.float32, "f16": np.float16}[shape.type]

    def w(*dims: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(dims) * scale).astype(wtype)

    writer = GGUFWriter(path, "llama")
    writer.add_name("cortex-tiny-test")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0 if shape.type == "f32" else 1)  # all F32, or mostly F16
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML)

    # numpy shape (rows, cols) == GGUF ne [cols, rows], which is what llama.cpp expects.
    embd = (rng.standard_normal((n_vocab, N_EMBD)) * 0.5).astype(np.float32)
    embd[:, 0] = 4.0  # the shared component the output layer keys on
    writer.add_tensor("token_embd.weight", embd.astype(wtype))
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", w(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", w(kv_width, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", w(kv_width, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    out = rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32)
    out[:, 0] = np.where(printable, 3.0, -3.0)
    writer.add_tensor("output.weight", out.astype(wtype))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit("usage: make_tiny_gguf.py OUT.gguf [CONTEXT] [SHAPE]  (CONTEXT: the trained context, default "
                 "256; llama-server caps a slot's context at it, so a long stream needs more)")
    write(sys.argv[1], int(sys.argv[2]) if len(sys.argv) >= 3 else N_CTX,
          Shape.parse(sys.argv[3]) if len(sys.argv) == 4 else Shape())
