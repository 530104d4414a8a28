"""course_lib.vit against independent references: Hugging Face's ViTForImageClassification (tiny
random config, copied weights, nothing downloaded), patchify against a per-patch slicing loop,
the Conv2d patch embedding against patchify + the same linear map; and a short training run on
scikit-learn's bundled digits."""
import pytest
import torch
import torch.nn.functional as F
from transformers import ViTConfig as HFViTConfig
from transformers import ViTForImageClassification

from course_lib.config import ConfigError
from course_lib.interop import VIT_KEYS, rename
from course_lib.vit import PatchEmbedding, ViTConfig, VisionTransformer, load_digits_tensors, patchify


def test_patchify_matches_a_slicing_loop():
    imgs = torch.randn(2, 3, 8, 8)
    ours = patchify(imgs, 4)
    ref = torch.stack([torch.stack([imgs[b, :, r:r + 4, c:c + 4].flatten() for r in (0, 4) for c in (0, 4)])  # (T, Ch·P·P)
                       for b in range(2)])
    assert torch.equal(ours, ref)


def test_conv_patch_embedding_equals_linear_on_patches():
    cfg = ViTConfig(image_size=8, patch_size=4, channels=3, d_model=12, n_heads=3)
    emb = PatchEmbedding(cfg)
    imgs = torch.randn(2, 3, 8, 8)
    W = emb.projection.weight.flatten(1)  # (C, Ch·P·P)
    ref = patchify(imgs, 4) @ W.T + emb.projection.bias
    err = (emb(imgs) - ref).abs().max().item()
    print(f"conv patch embedding vs linear on patches: {err:.2e}")
    assert err < 1e-5


def test_matches_hugging_face_vit():
    hf_cfg = HFViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=24, hidden_act="gelu", layer_norm_eps=1e-5,
                         num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = ViTForImageClassification(hf_cfg).eval()
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours = VisionTransformer(ViTConfig(image_size=8, patch_size=2, channels=1, d_model=16, n_layers=2,
                                       n_heads=4, d_ff=24)).eval()
    ours.load_state_dict(rename(hf.state_dict(), VIT_KEYS))  # the interop registry's ViT key map
    imgs = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        err = (ours(imgs) - hf(pixel_values=imgs).logits).abs().max().item()
    print(f"VisionTransformer vs HF ViTForImageClassification logits: max abs error {err:.2e}")
    assert err < 1e-5


def test_attention_maps_shapes_and_rows_sum_to_one():
    m = VisionTransformer(ViTConfig())
    maps = m.attention_maps(torch.rand(2, 1, 8, 8))
    assert len(maps) == 2 and maps[0].shape == (2, 4, 17, 17)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 17))


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="divisor of image_size"):
        ViTConfig(image_size=8, patch_size=3)
    with pytest.raises(ConfigError, match="multiple of n_heads"):
        ViTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 8, 8\)"):
        VisionTransformer(ViTConfig())(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_tensors(test_fraction=1.5)


def test_learns_digits_quickly():
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = load_digits_tensors()
    assert Xtr.shape == (1438, 1, 8, 8) and Xte.shape == (359, 1, 8, 8) and float(Xtr.max()) == 1.0
    m = VisionTransformer(ViTConfig())
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for step in range(120):
        idx = torch.randint(0, len(ytr), (64,))
        loss = F.cross_entropy(m(Xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (m(Xte).argmax(-1) == yte).float().mean().item()
    print(f"digits test accuracy after 120 steps: {acc:.3f}")
    assert acc > 0.6
