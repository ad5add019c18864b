"""Fast CPU tests for dlprojects.vit.model."""

import pytest
import torch
import torch.nn.functional as F

from dlprojects.vit.attention import packed_attention, supported
from dlprojects.vit.model import ViT, attention_rollout, patchify

SMALL = dict(image_size=28, patch_size=7, in_channels=1, num_classes=10,
             dim=32, depth=2, heads=4, mlp_dim=64, stem_channels=0)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # tiny ops gain nothing from threads; one thread keeps the suite fast on a busy machine
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("stem_channels", [0, 8])
@pytest.mark.parametrize("patch_size", [4, 7])
def test_logits_shape(patch_size, stem_channels):
    model = ViT(**{**SMALL, "patch_size": patch_size, "stem_channels": stem_channels})
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_default_config_is_the_cpu_recipe():
    model = ViT()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.pos_embedding.shape == (1, 17, 64) and len(model.blocks) == 4


def test_rgb_input_and_other_sizes():
    model = ViT(image_size=32, patch_size=8, in_channels=3, num_classes=7, dim=48, depth=1,
                heads=6, mlp_dim=96)
    logits, attns = model(torch.randn(2, 3, 32, 32), return_attention=True)
    assert logits.shape == (2, 7)
    assert len(attns) == 1 and attns[0].shape == (2, 6, 1, 17)  # the last block: class row


def test_patch_size_must_divide_image_size():
    with pytest.raises(ValueError, match=r"patch_size 5 does not divide image_size 28"):
        ViT(**{**SMALL, "patch_size": 5})


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match=r"heads 5 does not divide dim 32"):
        ViT(**{**SMALL, "heads": 5})


@pytest.mark.parametrize("stem_channels", [0, 8])
def test_sdpa_path_equals_explicit_attention(stem_channels):
    model = ViT(**{**SMALL, "patch_size": 4, "stem_channels": stem_channels}).eval()
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        fast = model(images)
        slow, attns = model(images, return_attention=True)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert len(attns) == SMALL["depth"]
    for a, rows in zip(attns, [50] * (SMALL["depth"] - 1) + [1]):  # last block: the class row
        assert a.shape == (4, SMALL["heads"], rows, 50)
        torch.testing.assert_close(a.sum(-1), torch.ones(4, SMALL["heads"], rows))
        assert (a >= 0).all()


def test_gradients_flow_through_explicit_attention_path():
    model = ViT(**SMALL)
    logits, _ = model(torch.randn(2, 1, 28, 28), return_attention=True)
    logits.sum().backward()
    assert model.pos_embedding.grad.abs().sum() > 0
    assert model.blocks[0].attn.to_qkv.weight.grad.abs().sum() > 0


def test_attention_rollout_shape_and_mass():
    model = ViT(**SMALL).eval()
    with torch.no_grad():
        _, attns = model(torch.randn(3, 1, 28, 28), return_attention=True)
    rollout = attention_rollout(attns)
    assert rollout.shape == (3, 16)
    assert (rollout > 0).all()
    # patch mass + class-token self mass = 1; the class token keeps some mass via the identity
    assert (rollout.sum(-1) < 1).all() and (rollout.sum(-1) > 0).all()


def _reference_attention(qkv, heads, queries):
    b, n, width = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, heads, width // 3 // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q[:, :, :queries], k, v)
    return out.transpose(1, 2).reshape(b, queries, width // 3)


@pytest.mark.parametrize("queries", [None, 1, 3])
def test_packed_attention_is_attention_and_its_gradient(queries):
    qkv = torch.randn(3, 5, 3 * 2 * 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: packed_attention(t, 2, queries), (qkv,))
    rows = queries or 5
    torch.testing.assert_close(packed_attention(qkv, 2, queries),
                               _reference_attention(qkv, 2, rows))
    grad = torch.randn(3, rows, 8, dtype=torch.float64)
    ours = torch.autograd.grad(packed_attention(qkv, 2, queries), qkv, grad)[0]
    reference = torch.autograd.grad(_reference_attention(qkv, 2, rows), qkv, grad)[0]
    torch.testing.assert_close(ours, reference)
    if queries:  # rows no query came from get no gradient from q
        assert (ours.reshape(3, 5, 3, 8)[:, queries:, 0] == 0).all()


def test_last_block_computes_the_class_row_of_the_full_block():
    model = ViT(**SMALL).eval()
    tokens = torch.randn(2, 17, SMALL["dim"])
    block = model.blocks[-1]
    assert supported(tokens)  # the portable numerics' CPU kernel, not scaled_dot_product_attention
    with torch.no_grad():
        full, full_attention = block(tokens, return_attention=True)
        row, row_attention = block(tokens, return_attention=True, queries=1)
        fast, _ = block(tokens, queries=1)
    torch.testing.assert_close(row, full[:, :1])
    torch.testing.assert_close(fast, full[:, :1])
    torch.testing.assert_close(row_attention, full_attention[:, :, :1])
    earlier = [torch.softmax(torch.randn(2, 4, 17, 17), -1)]
    torch.testing.assert_close(attention_rollout(earlier + [row_attention]),
                               attention_rollout(earlier + [full_attention]))


def test_attention_rollout_hand_example():
    # uniform attention over N tokens: (I + U)/2 per layer; one layer gives cls row
    # [1/2 + 1/(2N), 1/(2N), ...]
    n = 5
    uniform = torch.full((1, 2, n, n), 1.0 / n)
    rollout = attention_rollout([uniform])
    torch.testing.assert_close(rollout, torch.full((1, n - 1), 1.0 / (2 * n)))
    # identity attention leaves everything on the class token
    eye = torch.eye(n).expand(1, 3, n, n)
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.zeros(1, n - 1))
    with pytest.raises(ValueError):
        attention_rollout([])


def test_patchify_layout_and_round_trip():
    images = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 3, 4, 4)
    # row-major patch order: patch index 4 is row 1, column 1
    torch.testing.assert_close(patches[:, 4], images[:, :, 4:8, 4:8])
    with pytest.raises(ValueError):
        patchify(torch.randn(2, 1, 28, 28), 5)


def test_patch_embedding_is_linear_map_of_patchify():
    model = ViT(**SMALL)
    images = torch.randn(2, 1, 28, 28)
    tokens = model.patch_embed(images)  # (B, 16, D)
    proj = model.patch_embed.proj
    flat = patchify(images, 7).flatten(2)  # (B, 16, C*p*p)
    expected = flat @ proj.weight.flatten(1).T + proj.bias
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-5)


def test_tiny_model_overfits_small_batch():
    model = ViT(**SMALL)
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = F.cross_entropy(model(images), labels).item()
    for _ in range(100):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert F.cross_entropy(logits, labels).item() < 0.05 * first
    assert (logits.argmax(1) == labels).all()
