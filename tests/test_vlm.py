"""Notebook 07's online section (SmolVLM-256M-Instruct) run offline on a tiny Idefics3 built locally.

The tiny model has the real one's parts (a SigLIP-style tower, the pixel-shuffle connector, a Llama LM) at toy
sizes, random weights, and the course tokenizer with Idefics3's image tokens added. Its chat template is a
stand-in written here in the Idefics3 style; the real one comes with the real processor.
"""
import numpy as np
import pytest
import torch
from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

from utils import llava, lm_data, shapes, vlm

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def make_tiny_idefics3(folder):
    tokenizer = lm_data.load_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
        *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]}, replace_extra_special_tokens=False)
    # image 32 x 32, patches 8 x 8: 16 patch vectors, pixel-shuffled by 2 into 4 image tokens
    image_processor = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        image_token_id=processor.image_token_id, scale_factor=2, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_idefics3")
    make_tiny_idefics3(folder)
    return vlm.load_smolvlm(folder)


def images():
    scene = shapes.sample_scene(np.random.default_rng(0), n_objects=2, canvas=64)
    photo = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)  # stands in for a photo
    return [shapes.render_scene(scene), photo]


def test_describe_answers_in_words_and_equals_a_greedy_loop(tiny):
    model, processor = tiny
    texts = vlm.describe(model, processor, images(), max_new_tokens=6)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert vlm.describe(model, processor, images(), max_new_tokens=6) == texts  # greedy: the same twice
    # the same text from a greedy loop over the model's forward, with no cache
    inputs = vlm.chat_inputs(processor, images()[0], vlm.DESCRIBE_PROMPT)
    ids = inputs["input_ids"]
    with torch.no_grad():
        for _ in range(6):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
                           pixel_attention_mask=inputs["pixel_attention_mask"], use_cache=False).logits
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            if nxt.item() == processor.tokenizer.eos_token_id:
                break
    new = ids[0, inputs["input_ids"].shape[1]:]
    assert processor.decode(new, skip_special_tokens=True).strip() == texts[0]


def test_the_prompt_has_one_run_of_image_tokens(tiny):
    model, processor = tiny
    inputs = vlm.chat_inputs(processor, images()[1], "What is this?")
    ids = inputs["input_ids"][0]
    where = (ids == model.config.image_token_id).nonzero().flatten()
    assert len(where) == 4 and torch.equal(where, torch.arange(where[0], where[0] + 4))
    assert vlm.count_image_tokens(model, inputs) == 4


def test_llava_splice_gives_the_models_own_logits(tiny):
    """Our LLaVA splice (one placeholder, replaced by the connector's N vectors) rebuilds the VLM's input."""
    model, processor = tiny
    for img in images():
        inputs = vlm.chat_inputs(processor, img, vlm.DESCRIBE_PROMPT)
        with torch.no_grad():
            ref = model(**inputs).logits                                # (1, L, V)
            ours = model(inputs_embeds=vlm.llava_splice_embeds(model, inputs)).logits
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_llava_splice_embeds_rejects_a_batch_of_two(tiny):
    model, processor = tiny
    inputs = vlm.chat_inputs(processor, images()[0], "Hi")
    two = {k: torch.cat([v, v]) for k, v in inputs.items()}
    with pytest.raises(ValueError, match="one image"):
        vlm.llava_splice_embeds(model, two)


def test_parameter_groups_add_up(tiny):
    model, _ = tiny
    groups = vlm.parameter_groups(model)
    assert set(groups) == {"vision tower", "connector", "language model"}
    assert sum(groups.values()) == sum(p.numel() for p in model.parameters())


def test_pinned_revision_is_a_full_commit_hash():
    assert len(vlm.SMOLVLM_REVISION) == 40 and int(vlm.SMOLVLM_REVISION, 16) >= 0


def test_bad_inputs():
    with pytest.raises(TypeError, match="source"):
        vlm.load_smolvlm(source=3)
    with pytest.raises(ValueError, match="images"):
        vlm.describe(None, None, [])
    with pytest.raises(TypeError, match="max_new_tokens"):
        vlm.describe(None, None, [np.zeros((8, 8, 3), np.uint8)], max_new_tokens=2.5)
