"""A Llama-style decoder-only language model from scratch (notebooks 06 and 07; reused by 08 and 10).

Touvron et al., 2023, "LLaMA: Open and Efficient Foundation Language Models": a pre-norm Transformer
decoder with RMSNorm (Zhang & Sennrich, 2019), rotary position embeddings (Su et al., 2021, RoPE) and a
SwiGLU feed-forward layer (Shazeer, 2020). Parameter names follow transformers' `LlamaForCausalLM`
(`embed_tokens`, `layers.i.self_attn.q_proj`, `mlp.gate_proj`, `norm`, `lm_head`), so `to_llama` copies
weights by name and the tests compare logits. The model knows nothing of images: a vision-language model
passes `inputs_embeds` (token embeddings with image features spliced in, see `utils.llava`) or inserts
blocks that read a `context` tensor (`LM.insert_blocks`, Flamingo's gated cross-attention).

Shapes: B batch, L tokens, D width, H query heads, K key/value heads (K divides H), d = D / H head width,
V vocabulary, T cached tokens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100  # labels with this value carry no loss (transformers' and PyTorch's convention)


@dataclass
class LMConfig:
    vocab_size: int = 512         # V, tokens in the tokenizer (special tokens included)
    dim: int = 128                # D, the residual stream width
    n_layers: int = 4             # decoder layers
    n_heads: int = 4              # H, query heads; head width d = dim / n_heads (must be even for RoPE)
    n_kv_heads: int = 4           # K, key/value heads; K < H is grouped-query attention (Llama 2 70B, Llama 3)
    hidden_dim: int = 384         # SwiGLU hidden width (Llama uses about 8/3 * dim)
    max_seq_len: int = 256        # the longest sequence (prompt + generated), in tokens
    rope_theta: float = 10000.0   # RoPE base: frequency k is theta^(-2k/d)
    norm_eps: float = 1e-5        # RMSNorm epsilon
    tie_embeddings: bool = True   # lm_head shares the token embedding matrix (as SmolLM2 does)
    init_std: float = 0.02        # std of the normal initialisation of every weight matrix

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"the head width dim / n_heads = {self.dim // self.n_heads} must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ValueError(f"rope_theta and norm_eps must be > 0, got {self.rope_theta} and {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @staticmethod
    def preset(name: str) -> "LMConfig":
        """A named configuration from `LM_PRESETS` ('tiny' for tests, 'course' for the shipped LM)."""
        if name not in LM_PRESETS:
            raise ValueError(f"name must be one of {sorted(LM_PRESETS)}, got {name!r}")
        return LMConfig(**LM_PRESETS[name])

    def to_dict(self) -> dict:
        return asdict(self)


LM_PRESETS = {
    "tiny": dict(vocab_size=128, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=64),
    # the course LM of scripts/train_lm.py (data/checkpoints/lm_shapes): 0.92M parameters, 3.7 MB in float32;
    # 128 tokens hold a prompt with 64 image tokens, a question and its answer
    "course": dict(vocab_size=512, dim=128, n_layers=4, n_heads=4, n_kv_heads=4, hidden_dim=384, max_seq_len=128),
}


@dataclass
class LMOutput:
    logits: torch.Tensor                  # (B, L, V) next-token scores at every position
    loss: torch.Tensor | None = None      # 0-d mean shifted cross-entropy over labels != IGNORE_INDEX
    past_key_values: list | None = None   # per layer (k, v), each (B, K, T, d), when use_cache=True
    hidden_states: torch.Tensor | None = None  # (B, L, D) after the final norm


# ----------------------------------------------------------------------------- the functional core
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32 (as Llama does)."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles for integer `positions` (B, L): each (B, L, d), the d/2 frequencies
    theta^(-2k/d) repeated twice (the "rotate half" layout of transformers' Llama)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)  # (d/2,)
    angles = positions.float()[..., None] * inv_freq                                                 # (B, L, d/2)
    emb = torch.cat([angles, angles], dim=-1)                                                        # (B, L, d)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_k, x_{k+d/2}) of `x` (B, H, L, d) by its angle; cos, sin: (B, L, d)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)                        # (B, H, L, d)
    return x * cos[:, None] + rotated * sin[:, None]


def causal_mask(q_len: int, past_len: int, attention_mask: torch.Tensor | None, device=None) -> torch.Tensor:
    """Boolean (B or 1, 1, q_len, past_len + q_len), True where a query may attend: the keys at or before
    its own position that `attention_mask` (B, past_len + q_len) marks as real tokens."""
    k_len = past_len + q_len
    q_pos = torch.arange(past_len, k_len, device=device)[:, None]
    mask = (torch.arange(k_len, device=device)[None, :] <= q_pos)[None, None]  # (1, 1, q_len, k_len)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]                   # (B, 1, q_len, k_len)
        # a left-padding query sees no real key; let it see itself so softmax has no all -inf row
        mask = mask | (torch.arange(k_len, device=device)[None, :] == q_pos)[None, None]
    return mask


# ----------------------------------------------------------------------------- modules
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    """Causal self-attention with RoPE, grouped-query heads and an optional KV cache."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        H, K, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, H * d, bias=False)
        self.k_proj = nn.Linear(cfg.dim, K * d, bias=False)
        self.v_proj = nn.Linear(cfg.dim, K * d, bias=False)
        self.o_proj = nn.Linear(H * d, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask, past=None):
        B, L, _ = x.shape
        H, K, d = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim
        q = self.q_proj(x).view(B, L, H, d).transpose(1, 2)   # (B, H, L, d)
        k = self.k_proj(x).view(B, L, K, d).transpose(1, 2)   # (B, K, L, d)
        v = self.v_proj(x).view(B, L, K, d).transpose(1, 2)   # (B, K, L, d)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:  # the keys and values of earlier tokens, already rotated at their positions
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, K, T + L, d)
        present = (k, v)
        if K != H:  # each key/value head serves H / K query heads
            k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)  # (B, H, T + L, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)            # (B, H, L, d)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, H * d)), present    # (B, L, D)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """x + Attention(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, past=None):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), present


class LM(nn.Module):
    """Token embeddings -> decoder layers -> RMSNorm -> lm_head (`LlamaForCausalLM` in ~150 lines).

    `inserted` (empty unless `insert_blocks` fills it) holds extra blocks run before given decoder layers,
    each called as `h = block(h, context)` with the hidden states (B, L, D) and a context tensor (B, N, D_c);
    they are skipped when `forward` gets no `context`. `utils.llava` inserts Flamingo / Llama 3.2 gated
    cross-attention there, so this module never needs to know what the context is.
    """

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.inserted = nn.ModuleDict()
        self.apply(self._init_weights)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix is counted once

    def insert_blocks(self, blocks: Mapping[int, nn.Module]) -> None:
        """Run `blocks[i](h, context)` before decoder layer i (0 <= i < n_layers) whenever a context is given."""
        for i, block in blocks.items():
            if not 0 <= int(i) < self.cfg.n_layers:
                raise ValueError(f"layer index {i} must be in [0, {self.cfg.n_layers})")
            self.inserted[str(int(i))] = block

    def _embed(self, input_ids, inputs_embeds) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, L) and inputs_embeds (B, L, D)")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
            return self.embed_tokens(input_ids)                       # (B, L, D)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.cfg.dim:
            raise ValueError(f"inputs_embeds must be (B, L, {self.cfg.dim}), got shape {tuple(inputs_embeds.shape)}")
        return inputs_embeds

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: list | None = None, use_cache: bool = False,
                context: torch.Tensor | None = None) -> LMOutput:
        """Next-token logits, and the loss when `labels` are given.

        Args:
            input_ids: (B, L) token ids, or None when `inputs_embeds` is given (exactly one of the two).
            inputs_embeds: (B, L, D) input vectors, e.g. token embeddings with image features spliced in.
            labels: (B, L) target ids aligned with the inputs; position t is scored on predicting labels[t + 1]
                (the shift happens here), IGNORE_INDEX (-100) positions carry no loss.
            attention_mask: (B, T + L) 1 for real tokens, 0 for (left) padding, covering cached tokens too;
                positions count real tokens only, as transformers' `generate` does.
            past_key_values: the cache of an earlier call with use_cache=True (T tokens).
            use_cache: return the keys and values of all T + L tokens for the next call.
            context: (B, N, D_c) what inserted blocks attend to (e.g. image features), or a dict of such tensors
                that each block picks from (utils.video.VideoCrossAttentionLM); None skips them.
        Returns:
            LMOutput with logits (B, L, V), loss (0-d or None), past_key_values, hidden_states (B, L, D).
        """
        x = self._embed(input_ids, inputs_embeds)                     # (B, L, D)
        B, L, _ = x.shape
        T = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if T + L > self.cfg.max_seq_len:
            raise ValueError(f"the sequence has {T + L} tokens ({T} cached), more than max_seq_len="
                             f"{self.cfg.max_seq_len}")
        if labels is not None and labels.shape != (B, L):
            raise ValueError(f"labels must have shape {(B, L)} like the inputs, got {tuple(labels.shape)}")
        if attention_mask is not None:
            if attention_mask.shape != (B, T + L):
                raise ValueError(f"attention_mask must have shape {(B, T + L)} (cached + new tokens), "
                                 f"got {tuple(attention_mask.shape)}")
            positions = (attention_mask.long().cumsum(1) - 1).clamp_min(0)[:, T:]  # (B, L)
        else:
            positions = torch.arange(T, T + L, device=x.device).expand(B, L)      # (B, L)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        mask = causal_mask(L, T, attention_mask, x.device)
        presents = []
        for i, layer in enumerate(self.layers):
            if context is not None and str(i) in self.inserted:
                x = self.inserted[str(i)](x, context)
            x, present = layer(x, cos, sin, mask, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        h = self.norm(x)                                              # (B, L, D)
        logits = self.lm_head(h)                                      # (B, L, V)
        loss = None
        if labels is not None:  # position t predicts token t + 1
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
        return LMOutput(logits, loss, presents if use_cache else None, h)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None,
                 eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
                 use_cache: bool = True, context: torch.Tensor | None = None) -> torch.Tensor:
        """Continue a prompt token by token: greedy (argmax) or sampled from softmax(logits / temperature),
        restricted to the `top_k` most likely tokens, drawing from `generator` (reproducible).

        Args:
            input_ids / inputs_embeds / attention_mask / context: the prompt, as for `forward`.
            max_new_tokens: the most tokens to generate.
            eos_token_id: token id(s) that end a row; later tokens of that row are `pad_token_id`
                (default: the first EOS id). Generation stops when every row has ended.
            use_cache: keep the keys and values of past tokens (one new token per step) instead of
                recomputing the whole sequence every step; the tokens are the same.
        Returns:
            (B, S) the generated tokens only (S <= max_new_tokens), without the prompt.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        embeds = self._embed(input_ids, inputs_embeds)                # (B, L, D)
        B, L, _ = embeds.shape
        if L + max_new_tokens - 1 > self.cfg.max_seq_len:
            raise ValueError(f"prompt ({L} tokens) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len="
                             f"{self.cfg.max_seq_len}")
        eos = torch.tensor([] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int)
                           else list(eos_token_id), dtype=torch.long, device=embeds.device)
        pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
        mask = torch.ones(B, L, dtype=torch.long, device=embeds.device) if attention_mask is None else attention_mask
        finished = torch.zeros(B, dtype=torch.bool, device=embeds.device)
        step_in, past, tokens = embeds, None, []
        for _ in range(max_new_tokens):
            out = self(inputs_embeds=step_in, attention_mask=mask, past_key_values=past, use_cache=use_cache,
                       context=context)
            logits = out.logits[:, -1].float()                        # (B, V)
            if do_sample:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]  # (B,)
            else:
                nxt = logits.argmax(-1)                               # (B,)
            nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
            tokens.append(nxt)
            finished |= torch.isin(nxt, eos)
            if bool(finished.all()) or len(tokens) == max_new_tokens:
                break
            new = self.embed_tokens(nxt)[:, None]                     # (B, 1, D)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if use_cache:
                step_in, past = new, out.past_key_values
            else:
                step_in = torch.cat([step_in, new], dim=1)            # (B, L + t, D)
        return torch.stack(tokens, dim=1)                             # (B, S)


# ----------------------------------------------------------------------------- references and shipped files
def to_llama(model: LM):
    """transformers' `LlamaForCausalLM` with `model`'s config and weights (the parity reference)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                         rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, hidden_act="silu",
                         tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None, attention_bias=False, mlp_bias=False)
    hf_cfg.rope_parameters = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    ref = LlamaForCausalLM(hf_cfg)
    state = {("" if k == "lm_head.weight" else "model.") + k: v for k, v in model.state_dict().items()
             if not k.startswith("inserted.")}
    missing, unexpected = ref.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"weights do not map onto LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    return ref


def load_pretrained(name: str = "lm_shapes", directory=None) -> tuple[LM, object]:
    """(LM in eval mode, tokenizer) of a shipped checkpoint made by scripts/train_lm.py, hash-checked."""
    from . import DATA_DIR
    from .checkpoints import load_checkpoint
    from .lm_data import load_tokenizer

    directory = DATA_DIR / "checkpoints" if directory is None else directory
    state, config = load_checkpoint(directory / name)
    model = LM(LMConfig(**config["lm"]))
    if model.cfg.tie_embeddings:  # safetensors stores a shared matrix once
        state.setdefault("lm_head.weight", state["embed_tokens.weight"])
    model.load_state_dict(state)
    return model.eval(), load_tokenizer(directory / config["tokenizer"])
