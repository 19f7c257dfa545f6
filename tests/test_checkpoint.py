"""Checkpoints: our format round-trips, bad files fail clearly, the authors' pair imports exactly."""

import pytest
import torch
from torch import nn

from streamfuse.checkpoint import import_authors_weights, load_checkpoint, save_checkpoint
from streamfuse.cli import main
from streamfuse.errors import StreamFuseError
from streamfuse.model import DIDFuse, DIDFuseConfig
from test_model import randomise_batchnorm


def test_round_trip_keeps_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = DIDFuse()
    randomise_batchnorm(model)
    model.eval()
    path = save_checkpoint(model, tmp_path / "m.pt", {"data": "flir-train", "training": {"epochs": 3}})
    loaded, metadata = load_checkpoint(path)
    # Every weight and buffer comes back bit for bit ...
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[key], restored[key]) for key in original)
    # ... and the network computes the same image, to float32 rounding. The outputs were compared
    # bitwise until session 25, where that failed twice and never again in 60+ runs: the CPU
    # kernels do not promise one summation order from call to call. The weights, compared bitwise
    # above, are what a checkpoint must keep.
    image = torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model(image), rtol=0, atol=1e-6)
    assert metadata["data"] == "flir-train" and metadata["training"] == {"epochs": 3}
    assert "date" in metadata


def test_missing_file(tmp_path):
    with pytest.raises(StreamFuseError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_a_folder_is_not_called_missing(tmp_path):
    with pytest.raises(StreamFuseError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_diverged_weights_are_refused(tmp_path, bad_value):
    path = save_checkpoint(DIDFuse(), tmp_path / "diverged.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["decoder.conv7.1.weight"][0, 3, 1, 1] = bad_value
    torch.save(payload, path)
    with pytest.raises(StreamFuseError, match=r"diverged.pt: weight decoder.conv7.1.weight holds NaN or infinite"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    path = save_checkpoint(DIDFuse(), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StreamFuseError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_file_of_another_format(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(StreamFuseError, match="notes.pt: not a PyTorch checkpoint") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


def test_wrong_shape(tmp_path):
    path = save_checkpoint(DIDFuse(DIDFuseConfig(features=16)), tmp_path / "small.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"] = {"in_channels": 1, "features": 64}
    torch.save(payload, path)
    with pytest.raises(StreamFuseError, match=r"has shape \(16, 1, 3, 3\), the network needs \(64, 1, 3, 3\)"):
        load_checkpoint(path)


def test_other_kind_of_file(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(StreamFuseError, match="not a StreamFuse checkpoint"):
        load_checkpoint(path)


class Payload:
    """An arbitrary object: pickled inside a checkpoint, it must not be unpickled."""


def test_code_in_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "streamfuse-checkpoint", "thing": Payload()}, path)
    with pytest.raises(StreamFuseError, match="refused to load") as error:
        load_checkpoint(path)
    # The refusal names what was refused, not PyTorch's general advice on weights_only.
    assert "Payload" in str(error.value) and "weights_only" not in str(error.value)


# --- the authors' layout, written independently of our importer -------------------------------

def authors_layer(k: int, in_channels: int, out_channels: int, reflection: bool, activation: nn.Module) -> nn.Module:
    """One layer as the public code names it: module `cov{k}` holding a Sequential `cov{k}`."""
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3, padding=0)] if reflection else [
        nn.Conv2d(in_channels, out_channels, 3, padding=1)]
    sequential = nn.Sequential(*layers, nn.BatchNorm2d(out_channels), activation)
    holder = nn.Module()
    holder.add_module(f"cov{k}", sequential)
    return holder


class AuthorsEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.cov1 = authors_layer(1, 1, 64, True, nn.PReLU())
        self.cov2 = authors_layer(2, 64, 64, False, nn.PReLU())
        self.cov3 = authors_layer(3, 64, 64, False, nn.Tanh())
        self.cov4 = authors_layer(4, 64, 64, False, nn.Tanh())

    def forward(self, x):
        f1 = self.cov1.cov1(x)
        f2 = self.cov2.cov2(f1)
        return f1, f2, self.cov3.cov3(f2), self.cov4.cov4(f2)


class AuthorsDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.cov5 = authors_layer(5, 128, 64, False, nn.PReLU())
        self.cov6 = authors_layer(6, 128, 64, False, nn.PReLU())
        self.cov7 = authors_layer(7, 128, 1, True, nn.Sigmoid())

    def forward(self, f1, f2, base, detail):
        x = self.cov5.cov5(torch.cat((base, detail), 1))
        x = self.cov6.cov6(torch.cat((x, f2), 1))
        return self.cov7.cov7(torch.cat((x, f1), 1))


def write_authors_pair(tmp_path):
    torch.manual_seed(3)
    encoder, decoder = AuthorsEncoder(), AuthorsDecoder()
    for module in (encoder, decoder):
        randomise_batchnorm(module, seed=5)
        for prelu in (m for m in module.modules() if isinstance(m, nn.PReLU)):
            prelu.weight.data.uniform_(0.05, 0.4)
        module.eval()
    torch.save({"weight": encoder.state_dict(), "epoch": 120}, tmp_path / "Encoder_weight_IJCAI.pkl")
    torch.save({"weight": decoder.state_dict(), "epoch": 120}, tmp_path / "Decoder_weight_IJCAI.pkl")
    return encoder, decoder


def test_authors_keys_are_the_documented_ones(tmp_path):
    encoder, decoder = write_authors_pair(tmp_path)
    keys = set(encoder.state_dict()) | set(decoder.state_dict())
    assert "cov1.cov1.1.weight" in keys and "cov1.cov1.3.weight" in keys  # pad, conv, bn, prelu
    assert "cov2.cov2.0.weight" in keys and "cov2.cov2.2.weight" in keys  # conv, bn, prelu
    assert "cov7.cov7.2.running_var" in keys


def test_imported_weights_give_identical_outputs(tmp_path):
    encoder, decoder = write_authors_pair(tmp_path)
    ours = import_authors_weights(tmp_path / "Encoder_weight_IJCAI.pkl", tmp_path / "Decoder_weight_IJCAI.pkl")
    image = torch.rand(2, 1, 33, 41)
    with torch.no_grad():
        expected = decoder(*encoder(image))
        got = ours(image)
    # Same weights, same arithmetic; only the zero padding is a separate module on our side,
    # which may pick another convolution kernel: identical up to float32 rounding.
    assert float((expected - got).abs().max()) <= 1e-6


def test_import_weights_command_writes_a_loadable_checkpoint(tmp_path):
    encoder, decoder = write_authors_pair(tmp_path)
    out = tmp_path / "imported.pt"
    assert main(["import-weights", "--encoder", str(tmp_path / "Encoder_weight_IJCAI.pkl"),
                 "--decoder", str(tmp_path / "Decoder_weight_IJCAI.pkl"), "-o", str(out)]) == 0
    model, metadata = load_checkpoint(out)
    image = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert float((model(image) - decoder(*encoder(image))).abs().max()) <= 1e-6
    assert metadata["source"] == "authors' public checkpoints"


def test_swapped_authors_files_are_named(tmp_path, capsys):
    write_authors_pair(tmp_path)
    code = main(["import-weights", "--encoder", str(tmp_path / "Decoder_weight_IJCAI.pkl"),
                 "--decoder", str(tmp_path / "Encoder_weight_IJCAI.pkl"), "-o", str(tmp_path / "x.pt")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Decoder_weight_IJCAI.pkl" in err and "swapped" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def test_a_missing_authors_file_names_its_flag(tmp_path, capsys):
    write_authors_pair(tmp_path)
    missing = tmp_path / "Decoder_missing.pkl"
    code = main(["import-weights", "--encoder", str(tmp_path / "Encoder_weight_IJCAI.pkl"),
                 "--decoder", str(missing),
                 "-o", str(tmp_path / "x.pt")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"streamfuse import-weights: error: {missing}: no such checkpoint file "
        "(give --decoder the authors' decoder .pkl file)")


def test_authors_file_given_as_our_checkpoint_gets_a_hint(tmp_path):
    write_authors_pair(tmp_path)
    with pytest.raises(StreamFuseError, match="import-weights"):
        load_checkpoint(tmp_path / "Encoder_weight_IJCAI.pkl")
