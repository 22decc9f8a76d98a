"""utils.lm against transformers' LlamaForCausalLM with copied weights; the KV cache, the embedding path,
the loss and the bad inputs. Tolerances: logits within 1e-5 (float32), generations token for token."""
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from utils import lm

torch.set_num_threads(2)

CONFIGS = {  # tied embeddings + multi-head attention; untied + grouped-query attention
    "tied-mha": dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=4, hidden_dim=72, max_seq_len=64,
                     tie_embeddings=True),
    "untied-gqa": dict(vocab_size=101, dim=48, n_layers=3, n_heads=6, n_kv_heads=2, hidden_dim=96, max_seq_len=64,
                       tie_embeddings=False, rope_theta=500.0),
}


def make(name: str, seed: int = 0) -> lm.LM:
    torch.manual_seed(seed)
    model = lm.LM(lm.LMConfig(**CONFIGS[name])).eval()
    with torch.no_grad():  # norm weights away from 1 so that a missing or misplaced norm shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(params=list(CONFIGS))
def pair(request):
    model = make(request.param)
    return model, lm.to_llama(model).eval()


def test_presets_are_valid_configs():
    for name in lm.LM_PRESETS:
        cfg = lm.LMConfig.preset(name)
        assert cfg.dim % cfg.n_heads == 0
    with pytest.raises(ValueError, match="name"):
        lm.LMConfig.preset("huge")


def test_logits_equal_llama(pair):
    model, ref = pair
    ids = torch.randint(0, model.cfg.vocab_size, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids).logits, ref(ids).logits
    assert ours.shape == (3, 17, model.cfg.vocab_size)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_loss_equals_llama_and_manual_shift(pair):
    model, ref = pair
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :5] = lm.IGNORE_INDEX
    labels[1, -3:] = lm.IGNORE_INDEX
    with torch.no_grad():
        out = model(ids, labels=labels)
        manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1),
                                 ignore_index=-100)
        theirs = ref(ids, labels=labels).loss
    assert abs(out.loss.item() - manual.item()) <= 1e-6
    assert abs(out.loss.item() - theirs.item()) <= 1e-5


def test_greedy_generation_equals_llama(pair):
    model, ref = pair
    ids = torch.randint(0, model.cfg.vocab_size, (2, 5), generator=torch.Generator().manual_seed(3))
    ours = model.generate(ids, max_new_tokens=12)
    theirs = ref.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[:, ids.shape[1]:]
    assert torch.equal(ours, theirs)


def test_inputs_embeds_path_equals_input_ids_path(pair):
    model, _ = pair
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(4))
    embeds = model.embed_tokens(ids)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits, atol=0, rtol=0)
    assert torch.equal(model.generate(inputs_embeds=embeds, max_new_tokens=8), model.generate(ids, max_new_tokens=8))


@pytest.mark.parametrize("sample", [False, True])
def test_kv_cache_generation_equals_full_recompute(pair, sample):
    model, _ = pair
    ids = torch.randint(0, model.cfg.vocab_size, (3, 6), generator=torch.Generator().manual_seed(5))
    kw = dict(max_new_tokens=20, do_sample=sample, temperature=0.8, top_k=10)
    cached = model.generate(ids, use_cache=True, generator=torch.Generator().manual_seed(9), **kw)
    full = model.generate(ids, use_cache=False, generator=torch.Generator().manual_seed(9), **kw)
    assert cached.shape == (3, 20)
    assert torch.equal(cached, full)


def test_cached_logits_equal_full_logits(pair):
    model, _ = pair
    ids = torch.randint(0, model.cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :7], use_cache=True)
        rest = model(ids[:, 7:], past_key_values=first.past_key_values, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5, rtol=0)
    assert rest.past_key_values[0][0].shape[2] == 11


def test_sampling_is_reproducible_with_a_generator_and_topk_1_is_greedy():
    model = make("tied-mha")
    ids = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(7))
    a = model.generate(ids, max_new_tokens=15, do_sample=True, temperature=1.5, generator=torch.Generator().manual_seed(1))
    b = model.generate(ids, max_new_tokens=15, do_sample=True, temperature=1.5, generator=torch.Generator().manual_seed(1))
    c = model.generate(ids, max_new_tokens=15, do_sample=True, temperature=1.5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    top1 = model.generate(ids, max_new_tokens=15, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(top1, model.generate(ids, max_new_tokens=15))


def test_eos_stops_and_pads():
    model = make("tied-mha")
    ids = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(8))
    free = model.generate(ids, max_new_tokens=10)
    eos = int(free[0, 2])  # row 0 reaches this token at step 2 at the latest
    out = model.generate(ids, max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
    for row_free, row in zip(free, out):
        hits = (row_free == eos).nonzero()
        if len(hits):
            k = int(hits[0])
            assert torch.equal(row[:k + 1], row_free[:k + 1]) and bool((row[k + 1:] == 0).all())
        else:
            assert torch.equal(row, row_free)
    assert int(out[0, 2]) == eos or bool((out[0] == eos).any())
    one = model.generate(ids[:1], max_new_tokens=10, eos_token_id=int(free[0, 0]))
    assert one.shape == (1, 1)  # every row finished: generation stops early


def test_left_padded_batch_equals_rows_alone():
    model = make("untied-gqa")
    g = torch.Generator().manual_seed(10)
    a, b = torch.randint(1, 101, (1, 7), generator=g), torch.randint(1, 101, (1, 4), generator=g)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    out = model.generate(batch, attention_mask=mask, max_new_tokens=10)
    assert torch.equal(out[0], model.generate(a, max_new_tokens=10)[0])
    assert torch.equal(out[1], model.generate(b, max_new_tokens=10)[0])
    with torch.no_grad():  # the same logits as transformers given the same mask and positions
        ref = lm.to_llama(model).eval()
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        ours = model(batch, attention_mask=mask).logits
        theirs = ref(batch, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-5, rtol=0)


class AddContext(torch.nn.Module):
    """A stand-in for an inserted block: adds a learned multiple of the context's mean."""

    def __init__(self, dim):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, h, context):
        return h + self.scale * context.mean(1, keepdim=True)


def test_inserted_blocks_hook():
    model = make("tied-mha")
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(11))
    ctx = torch.randn(2, 5, 32)
    with torch.no_grad():
        plain = model(ids).logits
        model.insert_blocks({1: AddContext(32)})
        assert list(model.inserted) == ["1"]
        torch.testing.assert_close(model(ids, context=ctx).logits, plain, atol=0, rtol=0)  # zero scale: no change
        model.inserted["1"].scale.fill_(1.0)
        changed = model(ids, context=ctx).logits
        assert (changed - plain).abs().max() > 1e-3
        torch.testing.assert_close(model(ids).logits, plain, atol=0, rtol=0)  # no context: blocks skipped
    cached = model.generate(ids, max_new_tokens=6, context=ctx)
    assert torch.equal(cached, model.generate(ids, max_new_tokens=6, context=ctx, use_cache=False))
    with pytest.raises(ValueError, match="layer"):
        model.insert_blocks({5: AddContext(32)})


def test_bad_inputs_raise_naming_the_argument():
    model = make("tied-mha")
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="input_ids.*inputs_embeds"):
        model(ids, inputs_embeds=model.embed_tokens(ids))
    with pytest.raises(ValueError, match="input_ids.*inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate(torch.zeros(1, 60, dtype=torch.long), max_new_tokens=10)
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 4, 31))
    with pytest.raises(ValueError, match="labels"):
        model(ids, labels=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(ids, do_sample=True, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, max_new_tokens=0)


@pytest.mark.parametrize("bad,name", [(dict(dim=30, n_heads=4), "dim"), (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
                                      (dict(vocab_size=0), "vocab_size"), (dict(dim=20, n_heads=4), "head"),
                                      (dict(max_seq_len=0), "max_seq_len"), (dict(n_layers=0), "n_layers")])
def test_bad_config_raises(bad, name):
    base = dict(CONFIGS["tied-mha"])
    base.update(bad)
    with pytest.raises(ValueError, match=name):
        lm.LMConfig(**base)


# ----------------------------------------------------------------------------- corpus, tokenizer, shipped LM
def test_corpus_tokenizer_and_packing():
    from transformers import PreTrainedTokenizerFast

    from utils import lm_data, shapes

    docs = lm_data.make_corpus(300, seed=0)
    assert docs == lm_data.make_corpus(300, seed=0)
    tok = lm_data.train_tokenizer(docs, 300)
    assert tok.to_str() == lm_data.train_tokenizer(docs, 300).to_str()  # deterministic
    assert [tok.token_to_id(t) for t in lm_data.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    hf = lm_data.wrap_tokenizer(tok)
    assert isinstance(hf, PreTrainedTokenizerFast)
    text = lm_data.chat("Describe the image.", "a small red circle in the top left", image=True)
    assert hf.decode(hf(text)["input_ids"]) == text  # byte-level BPE round-trips
    assert hf.apply_chat_template([{"role": "user", "content": "<image>\nDescribe the image."},
                                   {"role": "assistant", "content": "a small red circle in the top left"}],
                                  tokenize=False) == text
    assert hf("<image>")["input_ids"] == [4] and hf.eos_token_id == 2 and hf.pad_token_id == 3
    obj = shapes.ShapeObject("circle", "orange", "small", 4.0, 4.0)
    assert lm_data.caption(obj) == "a small orange circle in the top left"
    blocks = lm_data.pack([[5, 6, 7], [8, 9]], block=3)
    assert blocks.tolist() == [[5, 6, 7], [0, 8, 9]]
    with pytest.raises(ValueError, match="vocab_size"):
        lm_data.train_tokenizer(docs, 100)
    with pytest.raises(ValueError, match="block"):
        lm_data.pack([[1, 2]], block=16)


def test_shipped_lm_and_tokenizer_load():
    from utils import DATA_DIR, lm_data

    if not (DATA_DIR / "checkpoints" / "lm_shapes.safetensors").exists():
        pytest.skip("data/checkpoints/lm_shapes is made by scripts/train_lm.py")
    model, tok = lm.load_pretrained()
    assert model.cfg == lm.LMConfig.preset("course") and len(tok) == model.cfg.vocab_size
    assert model.lm_head.weight is model.embed_tokens.weight
    prompt = tok.apply_chat_template([{"role": "user", "content": "<image>\nDescribe the image."}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(prompt, max_new_tokens=16, eos_token_id=tok.eos_token_id)
    words = tok.decode(out[0], skip_special_tokens=True).split()
    assert any(w in words for w in ("circle", "square", "triangle", "cross"))  # a pretrained LM writes captions
    assert lm_data.load_tokenizer().get_vocab() == tok.get_vocab()


def test_pack_documents_tokenizes_as_the_wrapped_tokenizer_does():
    from utils import lm_data

    tok = lm_data.load_tokenizer()
    docs = lm_data.make_corpus(40, seed=3)
    want = lm_data.pack([tok(d)["input_ids"] for d in docs], block=16)
    assert torch.equal(lm_data.pack_documents(tok, docs, 16), want)
    assert torch.equal(lm_data.pack_documents(tok.backend_tokenizer, docs, 16), want)
