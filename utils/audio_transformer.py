"""The Audio Spectrogram Transformer and an audio encoder feeding the LM (notebook 10).

Gong, Chung & Glass, 2021, "AST: Audio Spectrogram Transformer": a ViT on a log-mel spectrogram of 128 mel bins
(25 ms Hann windows every 10 ms), cut into 16 x 16 patches with stride 10 in both axes (an overlap of 6), a CLS
and a distillation token in front (DeiT), initialised from an ImageNet ViT by averaging the RGB channels of the
patch projection and interpolating the position embeddings. Names follow transformers'
`ASTForAudioClassification` (`cls_token`, `distillation_token`, `frequency_stride`, `time_stride`; the logits
come from the mean of the CLS and distillation outputs), so `to_transformers` copies weights and the tests
compare logits. Chu et al., 2024, "Qwen2-Audio": an audio encoder, a stride-2 average pooling, a projector and
an LLM, trained in three stages (pretraining, supervised fine-tuning, DPO: Rafailov et al., 2023, `dpo_loss`).

Shapes: B batch, M mel bins, T frames (10 ms each), f x t the patch grid (rows over frequency, columns over
time), N = f * t patches, D width, W one-second windows, L tokens, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import validate
from .llava import make_projector, splice_image_features
from .lm import IGNORE_INDEX, LM
from .vit import EncoderBlock, ViT, linear_to_conv_weight


# ----------------------------------------------------------------------------- the patch grid
def ast_patch_grid(n_mels: int, n_frames: int, patch_size: int = 16, frequency_stride: int = 10,
                   time_stride: int = 10) -> tuple[int, int]:
    """How many overlapping patches cover a spectrogram (notebook 10).

    Args:
        n_mels: M, mel bins (the spectrogram's rows).
        n_frames: T, frames (its columns, 10 ms each).
        patch_size: P, the side of a square patch.
        frequency_stride, time_stride: the step between patches along each axis (P - stride rows overlap).
    Returns:
        (f, t) = ((M - P) // frequency_stride + 1, (T - P) // time_stride + 1): patch rows and columns.
    """
    for name, value in (("n_mels", n_mels), ("n_frames", n_frames), ("patch_size", patch_size),
                        ("frequency_stride", frequency_stride), ("time_stride", time_stride)):
        validate.integer(name, value, min=1)
    if n_mels < patch_size:
        raise ValueError(f"n_mels={n_mels} is smaller than one patch (patch_size={patch_size})")
    if n_frames < patch_size:
        raise ValueError(f"n_frames={n_frames} is smaller than one patch (patch_size={patch_size})")
    return (n_mels - patch_size) // frequency_stride + 1, (n_frames - patch_size) // time_stride + 1


# ----------------------------------------------------------------------------- the model
@dataclass
class ASTConfig:
    n_mels: int = 128             # M, mel bins per frame (AST: 128)
    max_length: int = 98          # T, frames per input (1 s at a 10 ms hop; AST on Speech Commands: 128)
    patch_size: int = 16          # P, square patches of P x P
    frequency_stride: int = 10    # step between patch rows (16 - 10 = 6 bins of overlap)
    time_stride: int = 10         # step between patch columns
    dim: int = 64                 # D, token width
    depth: int = 4                # encoder blocks
    heads: int = 4                # attention heads per block
    mlp_dim: int = 128            # hidden width of each block's MLP
    num_classes: int = 11         # words to recognise (0: no head, the pooled feature is returned)
    layer_norm_eps: float = 1e-6  # of every LayerNorm (transformers' ASTConfig default is 1e-12)

    def __post_init__(self):
        for name in ("n_mels", "max_length", "patch_size", "frequency_stride", "time_stride", "dim", "depth",
                     "heads", "mlp_dim"):
            validate.integer(name, getattr(self, name), min=1)
        validate.integer("num_classes", self.num_classes, min=0)
        validate.number("layer_norm_eps", self.layer_norm_eps, 0.0, strict_min=True)
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if min(self.n_mels, self.max_length) < self.patch_size:
            raise ValueError(f"n_mels={self.n_mels} and max_length={self.max_length} must both be at least "
                             f"patch_size={self.patch_size}")

    @property
    def grid(self) -> tuple[int, int]:
        return ast_patch_grid(self.n_mels, self.max_length, self.patch_size, self.frequency_stride, self.time_stride)


class AST(nn.Module):
    """Overlapping Conv2d patches + CLS + distillation token -> `utils.vit` encoder blocks -> LayerNorm ->
    head on the mean of the two tokens' outputs."""

    def __init__(self, cfg: ASTConfig):
        super().__init__()
        validate.instance("cfg", cfg, ASTConfig)
        self.cfg = cfg
        f, t = cfg.grid
        # a Conv2d with stride < kernel is the overlapping patch cut and the projection W f(p) in one step
        self.patch_embed = nn.Conv2d(1, cfg.dim, cfg.patch_size, stride=(cfg.frequency_stride, cfg.time_stride))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 2 + f * t, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(cfg.dim, cfg.heads, cfg.mlp_dim, eps=cfg.layer_norm_eps)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        self.head_norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.num_classes) if cfg.num_classes else nn.Identity()

    def embed(self, spectrograms: torch.Tensor) -> torch.Tensor:
        """(B, M, T) normalised log-mel -> (B, 2 + N, D): CLS, distillation, then patches row by row."""
        validate.tensor("spectrograms", spectrograms, dim=3, floating=True)
        if tuple(spectrograms.shape[1:]) != (self.cfg.n_mels, self.cfg.max_length):
            raise ValueError(f"spectrograms must be (B, M, T) = (B, {self.cfg.n_mels}, {self.cfg.max_length}) for "
                             f"this model, got {tuple(spectrograms.shape)}")
        x = self.patch_embed(spectrograms[:, None])              # (B, D, f, t)
        x = x.flatten(2).transpose(1, 2)                         # (B, N, D), frequency-major like transformers
        B = x.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.distillation_token.expand(B, -1, -1), x], dim=1)
        return x + self.pos_embed                                # (B, 2 + N, D)

    def forward_features(self, spectrograms: torch.Tensor, return_attention: bool = False):
        """All output tokens after the final LayerNorm (B, 2 + N, D) (and per-block attention (B, H, 2+N, 2+N))."""
        x, maps = self.embed(spectrograms), []
        for block in self.blocks:
            if return_attention:
                x, w = block(x, return_attention=True)
                maps.append(w)
            else:
                x = block(x)
        x = self.norm(x)
        return (x, maps) if return_attention else x

    def forward(self, spectrograms: torch.Tensor, return_attention: bool = False):
        out = self.forward_features(spectrograms, return_attention)
        x, maps = out if return_attention else (out, None)
        pooled = (x[:, 0] + x[:, 1]) / 2                         # (B, D): CLS and distillation outputs averaged
        logits = self.head(self.head_norm(pooled))               # (B, num_classes)
        return (logits, maps) if return_attention else logits


def to_transformers(model: AST):
    """transformers' `ASTForAudioClassification` with `model`'s config and weights (the parity reference).
    Its `input_values` are (B, T, M): pass `spectrograms.transpose(1, 2)`."""
    from transformers import ASTConfig as HFASTConfig, ASTForAudioClassification

    validate.instance("model", model, AST)
    cfg = model.cfg
    if not cfg.num_classes:
        raise ValueError("model must have a classification head (num_classes > 0) to map onto "
                         "ASTForAudioClassification")
    hf = ASTForAudioClassification(HFASTConfig(
        hidden_size=cfg.dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
        intermediate_size=cfg.mlp_dim, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=cfg.layer_norm_eps, patch_size=cfg.patch_size, qkv_bias=True,
        frequency_stride=cfg.frequency_stride, time_stride=cfg.time_stride, max_length=cfg.max_length,
        num_mel_bins=cfg.n_mels, num_labels=cfg.num_classes)).eval()
    emb, base = hf.audio_spectrogram_transformer.embeddings, hf.audio_spectrogram_transformer
    with torch.no_grad():
        emb.cls_token.copy_(model.cls_token)
        emb.distillation_token.copy_(model.distillation_token)
        emb.position_embeddings.copy_(model.pos_embed)
        emb.patch_embeddings.projection.load_state_dict(model.patch_embed.state_dict())
        for ours, theirs in zip(model.blocks, base.layers):
            theirs.layernorm_before.load_state_dict(ours.ln_1.state_dict())
            theirs.layernorm_after.load_state_dict(ours.ln_2.state_dict())
            for name, w, b in zip(("q_proj", "k_proj", "v_proj"), ours.attn.qkv.weight.chunk(3),
                                  ours.attn.qkv.bias.chunk(3)):
                getattr(theirs.attention, name).weight.copy_(w)
                getattr(theirs.attention, name).bias.copy_(b)
            theirs.attention.o_proj.load_state_dict(ours.attn.proj.state_dict())
            theirs.mlp.fc1.load_state_dict(ours.mlp[0].state_dict())
            theirs.mlp.fc2.load_state_dict(ours.mlp[2].state_dict())
        base.layernorm.load_state_dict(model.norm.state_dict())
        hf.classifier.layernorm.load_state_dict(model.head_norm.state_dict())
        hf.classifier.dense.load_state_dict(model.head.state_dict())
    return hf


# ----------------------------------------------------------------------------- ImageNet ViT -> AST
def interpolate_position_embeddings(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample a grid of position embeddings, as AST does from its image ViT.

    Args:
        pos: (h * w, D) the embeddings of an h x w patch grid, row by row.
        grid: (h, w); new_grid: (f, t).
    Returns:
        (f * t, D), row by row.
    """
    validate.tensor("pos", pos, dim=2, floating=True)
    for name, g in (("grid", grid), ("new_grid", new_grid)):
        if not isinstance(g, (tuple, list)) or len(g) != 2:
            raise ValueError(f"{name} must be a (rows, columns) pair, got {g!r}")
        validate.integer(f"{name}[0]", g[0], min=1), validate.integer(f"{name}[1]", g[1], min=1)
    if pos.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"pos has {pos.shape[0]} rows but grid {tuple(grid)} has {grid[0] * grid[1]} patches")
    D = pos.shape[1]
    x = pos.T.reshape(1, D, *grid)                                                  # (1, D, h, w)
    x = F.interpolate(x, size=tuple(new_grid), mode="bilinear", align_corners=False)  # (1, D, f, t)
    return x.reshape(D, -1).T                                                       # (f * t, D)


def init_from_vit(model: AST, vit: ViT) -> AST:
    """Copy an image ViT into an AST, the paper's way (in place; returns `model`).

    The patch projection's RGB channels are averaged into one (a spectrogram has one channel); when the
    patch sizes differ the kernel is also resized (bilinear, divided by the area ratio so a flat input gives the
    same response; the paper needs no resize, both use 16 x 16). The position embeddings of the image grid are
    interpolated to the spectrogram's f x t grid; the CLS token (and its position) goes to both the CLS and the
    distillation slot. The first `model.cfg.depth` blocks and the final LayerNorm are copied; the head stays new.
    """
    validate.instance("model", model, AST), validate.instance("vit", vit, ViT)
    a, v = model.cfg, vit.cfg
    if (a.dim, a.heads, a.mlp_dim) != (v.dim, v.heads, v.mlp_dim) or a.depth > v.depth:
        raise ValueError(f"vit must have the AST's dim, heads and mlp_dim {(a.dim, a.heads, a.mlp_dim)} and at least "
                         f"its depth {a.depth}, got {(v.dim, v.heads, v.mlp_dim)} and depth {v.depth}")
    if v.pos != "learned" or vit.embed.cls_token is None:
        raise ValueError("vit must have learned position embeddings and a CLS token")
    with torch.no_grad():
        kernel = linear_to_conv_weight(vit.embed.proj.weight, v.patch_size, v.channels).mean(1, keepdim=True)
        if v.patch_size != a.patch_size:                                    # (D, 1, p, p) -> (D, 1, P, P)
            kernel = F.interpolate(kernel, size=(a.patch_size, a.patch_size), mode="bilinear", align_corners=False)
            kernel = kernel * (v.patch_size / a.patch_size) ** 2
        model.patch_embed.weight.copy_(kernel)
        model.patch_embed.bias.copy_(vit.embed.proj.bias)
        pos = vit.embed.pos_embed[0]                                        # (1 + h*w, D)
        grid = (v.image_size // v.patch_size,) * 2
        patches = interpolate_position_embeddings(pos[1:], grid, a.grid)   # (N, D)
        model.pos_embed.copy_(torch.cat([pos[:1], pos[:1], patches])[None])
        model.cls_token.copy_(vit.embed.cls_token)
        model.distillation_token.copy_(vit.embed.cls_token)
        for ours, theirs in zip(model.blocks, vit.blocks):
            ours.load_state_dict(theirs.state_dict())
        model.norm.load_state_dict(vit.norm.state_dict())
    return model


# ----------------------------------------------------------------------------- audio into the LM (Qwen2-Audio)
def pool_time(x: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """Average pooling with kernel = stride along the token axis: (B, n, D) -> (B, n // stride, D)."""
    validate.tensor("x", x, dim=3, floating=True)
    validate.integer("stride", stride, min=1)
    if x.shape[1] < stride:
        raise ValueError(f"x has {x.shape[1]} tokens, fewer than stride={stride}")
    return F.avg_pool1d(x.transpose(1, 2), stride, stride).transpose(1, 2)  # (B, n // stride, D)


class AudioLM(nn.Module):
    """audio_tower (an AST, run on each one-second window) -> its pooled token and its patch tokens averaged
    over frequency with stride-2 pooling -> multi_modal_projector -> spliced at the `<image>` placeholder's slot
    of the LM's prompt."""

    def __init__(self, audio_tower: AST, language_model: LM, audio_token_id: int, connector: str = "mlp2x_gelu",
                 pool_stride: int = 2):
        super().__init__()
        validate.instance("audio_tower", audio_tower, AST), validate.instance("language_model", language_model, LM)
        validate.integer("audio_token_id", audio_token_id, min=0), validate.integer("pool_stride", pool_stride, min=1)
        self.audio_tower, self.language_model = audio_tower, language_model
        self.audio_token_id, self.pool_stride = audio_token_id, pool_stride
        self.multi_modal_projector = make_projector(connector, audio_tower.cfg.dim, language_model.cfg.dim)

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, W, M, T) spectrogram windows -> (B, W * (1 + t // pool_stride), D_a): per window, the tower's
        pooled output (the mean of its CLS and distillation tokens, what its classifier reads), then its patch
        tokens averaged over frequency (one per patch column, 100 ms apart at time_stride=10), pooled in time."""
        validate.tensor("windows", windows, dim=4, floating=True)
        B, W = windows.shape[:2]
        f, t = self.audio_tower.cfg.grid
        x = self.audio_tower.forward_features(windows.flatten(0, 1))          # (B*W, 2 + f*t, D_a)
        pooled = (x[:, :1] + x[:, 1:2]) / 2                                   # (B*W, 1, D_a)
        cols = x[:, 2:].reshape(B * W, f, t, -1).mean(1)                      # (B*W, t, D_a)
        x = torch.cat([pooled, pool_time(cols, self.pool_stride)], dim=1)     # (B*W, 1 + t // s, D_a)
        return x.reshape(B, -1, x.shape[-1])                                  # (B, W * (1 + t // s), D_a)

    def get_audio_features(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows (B, W, M, T), or their `encode` outputs (B, n, D_a) cached while the tower is frozen ->
        (B, n, D_lm) audio tokens for the LM."""
        if isinstance(windows, torch.Tensor) and windows.dim() == 3:
            if windows.shape[-1] != self.audio_tower.cfg.dim:
                raise ValueError(f"windows must be (B, W, M, T) spectrograms or (B, n, {self.audio_tower.cfg.dim}) "
                                 f"encoded tokens, got shape {tuple(windows.shape)}")
            return self.multi_modal_projector(windows)
        encoded = self.encode(windows)
        return self.multi_modal_projector(encoded)                            # (B, n, D_lm)

    def _prepare(self, windows, input_ids, labels=None):
        embeds = self.language_model.embed_tokens(input_ids)                  # (B, L, D_lm)
        return splice_image_features(input_ids, embeds, self.get_audio_features(windows), self.audio_token_id, labels)

    def forward(self, windows: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        """windows: (B, W, M, T) or cached `encode` outputs (B, n, D_a); input_ids/labels: (B, L) with one
        placeholder per row. Returns the LM's output on the L - 1 + n spliced vectors."""
        embeds, labels = self._prepare(windows, input_ids, labels)
        return self.language_model(inputs_embeds=embeds, labels=labels)

    @torch.no_grad()
    def generate(self, windows: torch.Tensor, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        embeds, _ = self._prepare(windows, input_ids)
        return self.language_model.generate(inputs_embeds=embeds, **kwargs)


# ----------------------------------------------------------------------------- DPO
def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log pi(y | x): the sum over answer tokens of log softmax(logits) at the next token.

    Args:
        logits: (B, L, V) from the LM; position i predicts token i + 1.
        labels: (B, L) token ids, IGNORE_INDEX where no loss is taken (prompt, padding, audio).
    Returns:
        (B,) summed log-probabilities of each row's answer.
    """
    validate.tensor("logits", logits, dim=3, floating=True)
    validate.tensor("labels", labels, dim=2)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be (B, L) = {tuple(logits.shape[:2])} like logits, got {tuple(labels.shape)}")
    target = labels[:, 1:]                                                # (B, L-1)
    keep = target != IGNORE_INDEX
    logp = logits[:, :-1].float().log_softmax(-1)                         # (B, L-1, V)
    picked = logp.gather(-1, target.clamp_min(0)[..., None])[..., 0]      # (B, L-1)
    return (picked * keep).sum(1)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """Direct Preference Optimization (Rafailov et al., 2023), the third stage of Qwen2-Audio:

        L = -mean log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) log pi(y|x) of the preferred (y_w) and the rejected
            (y_l) answer under the model being trained (`sequence_logprob`).
        reference_chosen_logps, reference_rejected_logps: (B,) the same under the frozen reference model.
        beta: > 0, how far from the reference the policy may move (small beta: far).
    Returns:
        0-d mean loss.
    """
    names = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")
    values = (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    for name, value in zip(names, values):
        validate.tensor(name, value, dim=1, floating=True, finite=True)
        if value.shape != policy_chosen_logps.shape:
            raise ValueError(f"{name} must have shape {tuple(policy_chosen_logps.shape)} like policy_chosen_logps, "
                             f"got {tuple(value.shape)}")
    validate.number("beta", beta, 0.0, strict_min=True)
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin).mean()


def instruction_rows(tokenizer, prompts: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """ChatML rows `user: <image>\\n{prompt}` -> `assistant: {answer}<|im_end|>`, right-padded (notebook 10).

    The course LM's vocabulary has no `<audio>` token: the audio features take the `<image>` placeholder's slot.
    Returns:
        input_ids (n, L) and labels (n, L), IGNORE_INDEX everywhere but on the answer and its `<|im_end|>`.
    """
    from .llava_data import prompt_answer_rows

    prompts, answers = validate.strings("prompts", prompts), validate.strings("answers", answers)
    if len(prompts) != len(answers):
        raise ValueError(f"prompts and answers must have the same length, got {len(prompts)} and {len(answers)}")
    return prompt_answer_rows(tokenizer, prompts, answers)


# ----------------------------------------------------------------------------- the real AST (online, opt-in)
AST_HUB_ID = "MIT/ast-finetuned-speech-commands-v2"
# the Hub commit "Upload ASTForSequenceClassification" (config.json, preprocessor_config.json, pytorch_model.bin,
# loaded by transformers with torch.load(weights_only=True)); later commits add a feature-extractor upload and a
# safetensors copy of the same weights
AST_REVISION = "89319016831c8eed95336d68300dab769d5a15c3"


def load_hf_ast(source: str = AST_HUB_ID, revision: str | None = AST_REVISION):
    """(ASTForAudioClassification in eval mode, ASTFeatureExtractor) from the Hub or a local folder."""
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    if not isinstance(source, str) and not hasattr(source, "__fspath__"):
        raise TypeError(f"source must be a Hub id or a folder, got {type(source).__name__}")
    kw = {} if revision is None else {"revision": revision}
    model = ASTForAudioClassification.from_pretrained(source, **kw).eval()
    return model, ASTFeatureExtractor.from_pretrained(source, **kw)


@torch.no_grad()
def hf_ast_predict(model, feature_extractor, waveforms: torch.Tensor, sample_rate: int = 16000) -> list[str]:
    """The label the model gives each row of `waveforms` (B, T) (float samples at `sample_rate` Hz)."""
    validate.tensor("waveforms", waveforms, dim=2, floating=True, finite=True)
    validate.integer("sample_rate", sample_rate, min=1)
    inputs = feature_extractor([w.numpy() for w in waveforms], sampling_rate=sample_rate, return_tensors="pt")
    logits = model(**inputs).logits                                      # (B, num_labels)
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)]
