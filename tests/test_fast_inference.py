"""The predictor's throughput options on CPU: batched encoding, AMP validation, channels_last,
torch.compile. (GPU against CPU: tests/test_cuda.py.)"""

import numpy as np
import pytest
import torch

import box2mask
from box2mask.model.predictor import Box2MaskPredictor
from tests.disc_scenes import disc_scene
from tests.tiny_model import save_tiny_checkpoint, tiny_model

# (H, W); image_size 64: the first four pad to a 64 x 64 network input, the last two to 64 x 32
SHAPES = [(60, 80), (48, 64), (64, 64), (50, 70), (80, 40), (64, 30)]


@pytest.fixture(scope="module")
def scenes():
    return [disc_scene(h, w, seed=i) for i, (h, w) in enumerate(SHAPES)]


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1, num_queries=5)


def counting(predictor):
    """Record the input shape of every forward pass of the predictor's image encoder."""
    calls, encode = [], predictor._encode

    def wrapped(images):
        calls.append(tuple(images.shape))
        return encode(images)

    predictor._encode = wrapped
    return calls


def float_tensors(state):
    return {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}


def test_batched_encode_equals_one_at_a_time(model, scenes):
    batched = Box2MaskPredictor(model, image_size=64, batch_encode=True)
    single = Box2MaskPredictor(model, image_size=64)
    calls = counting(batched)
    states = batched.encode_states([image for image, _, _ in scenes])
    assert calls == [(4, 3, 64, 64), (2, 3, 64, 32)]  # one pass per padded size, not per image
    for (image, boxes, _), state in zip(scenes, states, strict=True):
        alone = single.encode_state(image)
        assert {k: v for k, v in state.items() if not torch.is_tensor(v)} == {
            k: v for k, v in alone.items() if not torch.is_tensor(v)
        }  # sizes, scale, number of levels
        assert torch.equal(state["image"], alone["image"])
        for key, value in float_tensors(alone).items():
            assert state[key].shape == value.shape  # its own slice, not the batch
            torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-4)
        batched.set_state(state)
        single.set_image(image)
        for steps in (0, 10):  # the model's masks, and after level-set refinement
            masks_b, scores_b = batched.predict(boxes, steps=steps)
            masks_s, scores_s = single.predict(boxes, steps=steps)
            assert np.array_equal(masks_b, masks_s)
            np.testing.assert_allclose(scores_b, scores_s, atol=1e-4)


def test_cpu_default_encodes_one_image_per_pass_bit_exactly(model, scenes):
    predictor = Box2MaskPredictor(model, image_size=64)
    assert predictor.batch_encode is False  # the CPU default: the float32 path is unchanged
    calls = counting(predictor)
    images = [image for image, _, _ in scenes[:3]]
    states = predictor.encode_states(images)
    assert len(calls) == 3 and all(shape[0] == 1 for shape in calls)
    for image, state in zip(images, states, strict=True):
        alone = predictor.encode_state(image)
        assert all(torch.equal(state[k], v) for k, v in float_tensors(alone).items())
    assert predictor.encode_states([]) == []


def test_a_sliced_state_does_not_keep_the_whole_batch(model, scenes):
    predictor = Box2MaskPredictor(model, image_size=64, batch_encode=True)
    states = predictor.encode_states([image for image, _, _ in scenes[:4]])
    features = states[1]["mask_features"]
    assert features.untyped_storage().nbytes() == features.numel() * features.element_size()


def test_amp_needs_cuda_and_a_known_choice(model):
    with pytest.raises(ValueError, match="amp='bf16' needs a CUDA device.*use amp 'off'"):
        Box2MaskPredictor(model, amp="bf16")
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
        Box2MaskPredictor(model, device="cpu", amp="fp16")
    with pytest.raises(ValueError, match="amp must be one of off, bf16, fp16; got 'fp32'"):
        Box2MaskPredictor(model, amp="fp32")
    assert Box2MaskPredictor(model, amp="off").amp == "off"


def test_model_options_need_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="channels_last: options of a trained model"):
        box2mask.build_predictor(None, channels_last=True)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.pt", "tiny", config={"image_size": 64})
    predictor = box2mask.build_predictor(ckpt, device="cpu", channels_last=True)
    assert predictor.channels_last and predictor.image_size == 64


def test_channels_last_on_cpu_gives_the_same_masks(scenes):
    plain = Box2MaskPredictor(tiny_model(seed=1, num_queries=5), image_size=64)
    fast = Box2MaskPredictor(tiny_model(seed=1, num_queries=5), image_size=64, channels_last=True)
    assert fast.model.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    for image, boxes, _ in scenes[:3]:
        a, b = plain.encode_state(image), fast.encode_state(image)
        for key, value in float_tensors(a).items():
            torch.testing.assert_close(b[key].contiguous(), value, rtol=1e-4, atol=1e-4)
        plain.set_state(a)
        fast.set_state(b)
        assert np.array_equal(plain.predict(boxes)[0], fast.predict(boxes)[0])


@pytest.mark.slow
def test_compiled_encoder_on_cpu_gives_the_same_masks(model, scenes):
    plain = Box2MaskPredictor(model, image_size=64)
    compiled = Box2MaskPredictor(model, image_size=64, compile=True)
    image, boxes, _ = scenes[0]
    a, b = plain.encode_state(image), compiled.encode_state(image)
    for key, value in float_tensors(a).items():
        torch.testing.assert_close(b[key], value, rtol=1e-4, atol=1e-4)
    plain.set_state(a)
    compiled.set_state(b)
    assert np.array_equal(plain.predict(boxes)[0], compiled.predict(boxes)[0])


def test_training_amp_words_resolve_to_the_predictor_vocabulary():
    """One AMP vocabulary: a training config's "auto" / "fp32" become the predictor's words, and
    everything else is checked by the predictor's `amp_dtype` (same errors)."""
    from box2mask.model.fast_inference import amp_dtype, resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == resolve_amp("fp32", cpu) == "off"
    assert amp_dtype(resolve_amp("auto", cpu), cpu) is None
    with pytest.raises(ValueError, match="amp must be one of off, bf16, fp16; got 'fp8'"):
        amp_dtype(resolve_amp("fp8", cpu), cpu)
    with pytest.raises(ValueError, match="amp='bf16' needs a CUDA device"):
        amp_dtype(resolve_amp("bf16", cpu), cpu)
