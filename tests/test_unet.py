import pytest
import torch

from models.conditioning import Conditioning
from models.unet import UNet, UNetConfig, with_overrides


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 28), (1, 32), (3, 32), (1, 14)])
def test_output_shape_matches_input(channels, size):
    model = UNet(UNetConfig(image_channels=channels, image_size=size, channels=(8, 16, 16), condition_dim=4))
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([0, 999]), Conditioning(torch.randn(2, 4)))
    assert out.shape == x.shape


def test_cross_attention_reads_tokens_and_respects_drop():
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(8, 16), condition_dim=4, token_dim=6)).eval()
    for p in model.parameters():
        p.data.add_(0.1 * torch.randn_like(p))  # undo zero-inits so every path matters
    x, t, emb = torch.randn(1, 1, 28, 28), torch.tensor([300]), torch.randn(1, 4)
    tokens_a, tokens_b = torch.randn(1, 5, 6), torch.randn(1, 5, 6)
    mask = torch.ones(1, 5, dtype=torch.bool)
    out_a = model(x, t, Conditioning(emb, tokens_a, mask))
    out_b = model(x, t, Conditioning(emb, tokens_b, mask))
    assert not torch.allclose(out_a, out_b)
    drop = torch.ones(1, dtype=torch.bool)
    assert torch.allclose(model(x, t, Conditioning(emb, tokens_a, mask, drop=drop)), model(x, t, Conditioning(emb, tokens_b, mask, drop=drop)))
    # Masked-out (padding) tokens are never read.
    partial = torch.tensor([[True, True, False, False, False]])
    tokens_c = torch.cat([tokens_a[:, :2], torch.randn(1, 3, 6)], dim=1)
    assert torch.allclose(model(x, t, Conditioning(emb, tokens_a, partial)), model(x, t, Conditioning(emb, tokens_c, partial)), atol=1e-6)


def test_super_resolution_inputs_reach_the_output():
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(8, 16), condition_dim=4, low_res_channels=1, noise_level_conditioning=True)).eval()
    for p in model.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    x, t, emb, low = torch.randn(1, 1, 28, 28), torch.tensor([300]), torch.randn(1, 4), torch.randn(1, 1, 28, 28)
    base = model(x, t, Conditioning(emb, low_res=low, noise_level=torch.tensor([0.1])))
    assert not torch.allclose(base, model(x, t, Conditioning(emb, low_res=low, noise_level=torch.tensor([0.5]))))
    assert not torch.allclose(base, model(x, t, Conditioning(emb, low_res=-low, noise_level=torch.tensor([0.1]))))


@pytest.mark.parametrize("channels,low_res", [(1, 0), (3, 0), (1, 1)])
def test_full_resolution_refinement_starts_as_identity_then_corrects_the_output(channels, low_res):
    torch.manual_seed(0)
    config = UNetConfig(image_channels=channels, channels=(8, 16), condition_dim=4, low_res_channels=low_res * channels, noise_level_conditioning=bool(low_res))
    plain, refined = UNet(config).eval(), UNet(with_overrides(config, full_res_channels=4)).eval()
    refined.load_state_dict(plain.state_dict(), strict=False)
    x, t = torch.randn(2, channels, 28, 28), torch.tensor([5, 500])
    cond = Conditioning(torch.randn(2, 4), low_res=torch.randn(2, channels, 28, 28) if low_res else None,
                        noise_level=torch.tensor([0.1, 0.1]) if low_res else None)
    assert torch.equal(plain(x, t, cond), refined(x, t, cond))  # zero-initialised: training starts from the plain UNet
    for name, p in refined.named_parameters():
        if name.startswith("refine"):  # only the refinement changes, so any difference in the output is its correction
            p.data.add_(0.1 * torch.randn_like(p))
    out = refined(x, t, cond)
    assert out.shape == x.shape and not torch.allclose(out, plain(x, t, cond))
