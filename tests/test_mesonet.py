"""peer_models/mesonet.py: the rebuilt Meso-4 against an independent float64 numpy version of each Keras layer,
with the published weights read straight from the HDF5 file; the SHA-256 check of the weight files."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from peer_models.mesonet import WEIGHTS, WEIGHTS_DIR, Meso4, WeightsError, fake_scores, load_meso4


# --------------------------------------------------------------------------- the Keras layers in numpy (float64)
def k_conv_same(x, kernel, bias):
    """Keras Conv2D(padding='same', strides=1) on one H x W x C image: zero padding of (k-1)//2 before and the
    rest after, then a cross-correlation, summed tap by tap."""
    kh, kw, _, cout = kernel.shape
    t, l = (kh - 1) // 2, (kw - 1) // 2
    p = np.pad(x, ((t, kh - 1 - t), (l, kw - 1 - l), (0, 0)))
    h, w = x.shape[:2]
    out = np.zeros((h, w, cout))
    for i in range(kh):
        for j in range(kw):
            out += p[i:i + h, j:j + w, :] @ kernel[i, j]
    return out + bias


def k_relu(x):
    return np.maximum(x, 0.0)


def k_batchnorm(x, gamma, beta, mean, var, eps=1e-3):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def k_maxpool(x, p):
    """Keras MaxPooling2D(pool_size=p) (strides = p): the maximum of each p x p cell, cell by cell."""
    h, w, c = x.shape
    out = np.empty((h // p, w // p, c))
    for i in range(h // p):
        for j in range(w // p):
            out[i, j] = x[i * p:(i + 1) * p, j * p:(j + 1) * p].max(axis=(0, 1))
    return out


def k_flatten(x):
    return x.reshape(-1)  # H x W x C in C order: Keras' Flatten on channels-last data


def k_dense(x, kernel, bias):
    return x @ kernel + bias


def k_leaky(x, alpha=0.1):
    return np.where(x > 0, x, alpha * x)


def k_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def h5_layers(path):
    """``(conv, bn, dense)`` weight lists read from the file by the layout its README gives."""
    conv, bn, dense = [], [], []
    with h5py.File(path, "r") as f:
        for raw in f.attrs["layer_names"]:
            n = raw.decode()
            g = f[n][n] if n in f and n in f[n] else None
            if n.startswith("conv2d"):
                conv.append([np.asarray(g[k], np.float64) for k in ("kernel:0", "bias:0")])
            elif n.startswith("batch_normalization"):
                bn.append([np.asarray(g[k], np.float64)
                           for k in ("gamma:0", "beta:0", "moving_mean:0", "moving_variance:0")])
            elif n.startswith("dense"):
                dense.append([np.asarray(g[k], np.float64) for k in ("kernel:0", "bias:0")])
    return conv, bn, dense


def keras_reference(img, path):
    """Every layer's output for one image ``[256, 256, 3]`` in [0, 1], float64, H x W x C."""
    conv, bn, dense = h5_layers(path)
    out, x = {}, np.asarray(img, np.float64)
    for i, pool in enumerate((2, 2, 2, 4)):
        x = out[f"conv{i + 1}"] = k_relu(k_conv_same(x, *conv[i]))
        x = out[f"bn{i + 1}"] = k_batchnorm(x, *bn[i])
        x = out[f"pool{i + 1}"] = k_maxpool(x, pool)
    x = out["flatten"] = k_flatten(x)
    x = out["dense1"] = k_dense(x, *dense[0])
    x = out["leaky"] = k_leaky(x)
    x = out["dense2"] = k_dense(x, *dense[1])[0]
    out["sigmoid"] = k_sigmoid(x)
    return out


def hand_made_inputs():
    """Five 256 x 256 RGB images in [0, 1]: mid grey, a colour ramp, a checkerboard, a bright disc on a dark
    ground, seeded noise."""
    yy, xx = np.mgrid[:256, :256] / 255.0
    grey = np.full((256, 256, 3), 0.5)
    ramp = np.stack([xx, yy, 1.0 - xx], -1)
    checker = np.repeat(((np.mgrid[:256, :256] // 8).sum(0) % 2)[..., None], 3, -1).astype(float)
    disc = (((xx - 0.5) ** 2 + (yy - 0.45) ** 2) < 0.1).astype(float)[..., None] * np.array([0.9, 0.7, 0.6]) + 0.05
    noise = np.random.default_rng(7).random((256, 256, 3))
    return {"grey": grey, "ramp": ramp, "checker": checker, "disc": disc, "noise": noise}


# --------------------------------------------------------------------------- the reference checked by hand
def test_the_numpy_reference_layers_give_hand_computed_answers():
    x = np.arange(1.0, 10.0).reshape(3, 3, 1)                 # 1 2 3 / 4 5 6 / 7 8 9
    ones = np.ones((3, 3, 1, 1))
    y = k_conv_same(x, ones, np.zeros(1))[..., 0]
    assert y[0, 0] == 1 + 2 + 4 + 5 and y[1, 1] == 45 and y[2, 1] == 4 + 5 + 6 + 7 + 8 + 9
    assert k_maxpool(np.arange(16.0).reshape(4, 4, 1), 2)[..., 0].tolist() == [[5, 7], [13, 15]]
    z = np.zeros((2, 2, 3))
    z[1, 0, 2] = 1.0                                           # h=1, w=0, c=2 -> index (1*2+0)*3+2 = 8
    assert int(np.argmax(k_flatten(z))) == 8
    assert k_batchnorm(np.array([3.0]), 2.0, 1.0, 1.0, 1.0 - 1e-3)[0] == pytest.approx(5.0)
    assert k_leaky(np.array([-2.0, 3.0])).tolist() == [-0.2, 3.0]


def test_the_torch_flatten_reads_channels_last_like_keras():
    m = Meso4().eval()
    x = torch.zeros(1, 16, 8, 8)
    x[0, 5, 2, 3] = 1.0                                        # c=5, h=2, w=3 -> (2*8+3)*16+5
    flat = x.permute(0, 2, 3, 1).flatten(1)
    assert int(flat.argmax()) == (2 * 8 + 3) * 16 + 5
    out = m.layers(torch.zeros(1, 3, 256, 256))
    assert out["pool4"].shape == (1, 16, 8, 8) and out["flatten"].shape == (1, 1024)


# --------------------------------------------------------------------------- the rebuilt network against it
@pytest.mark.parametrize("weights", ["Meso4_DF", "Meso4_F2F"])
def test_every_layer_matches_the_keras_maths_on_hand_made_inputs(weights):
    path = WEIGHTS_DIR / WEIGHTS[weights][0]
    model = load_meso4(weights).double()
    assert not model.training                                  # dropout off, BatchNorm on its moving stats
    names = ["conv1", "bn1", "pool1", "conv2", "bn2", "pool2", "conv3", "bn3", "pool3", "conv4", "bn4", "pool4",
             "flatten", "dense1", "leaky", "dense2", "sigmoid"]
    scores = []
    for label, img in hand_made_inputs().items():
        ref = keras_reference(img, path)
        with torch.no_grad():
            got = model.layers(torch.from_numpy(img).permute(2, 0, 1)[None])
        for name in names:
            g = got[name][0].numpy()
            if g.ndim == 3:
                g = g.transpose(1, 2, 0)                       # C x H x W -> Keras' H x W x C
            r = ref[name]
            assert g.shape == np.shape(r), (label, name)
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(r).max()),
                                       err_msg=f"{weights} {label} {name}")
        scores.append(ref["sigmoid"])
    assert np.ptp(scores) > 1e-3                               # the inputs are told apart: not a constant net


def test_fake_scores_are_one_minus_the_keras_output_in_float32():
    model = load_meso4("Meso4_DF")
    imgs = hand_made_inputs()
    u8 = np.stack([np.round(v * 255).astype(np.uint8) for v in imgs.values()])
    got = fake_scores(model, u8, batch_size=2)
    ref = [1.0 - keras_reference(x / 255.0, WEIGHTS_DIR / "Meso4_DF.h5")["sigmoid"] for x in u8.astype(float)]
    np.testing.assert_allclose(got, ref, atol=2e-5)
    with pytest.raises(ValueError, match=r"expected faces \[N, 256, 256, 3\]"):
        fake_scores(model, u8[:, :64, :64])


# --------------------------------------------------------------------------- the weight files
def test_a_changed_weight_file_is_refused_by_its_sha256(tmp_path):
    shutil.copy(WEIGHTS_DIR / "Meso4_DF.h5", tmp_path / "Meso4_DF.h5")
    load_meso4("Meso4_DF", root=tmp_path)                      # the unchanged copy loads
    data = bytearray((tmp_path / "Meso4_DF.h5").read_bytes())
    data[-100] ^= 0x01                                         # one bit of the weights
    (tmp_path / "Meso4_DF.h5").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"Meso4_DF\.h5: SHA-256 [0-9a-f]{64} does not match .*refusing"):
        load_meso4("Meso4_DF", root=tmp_path)
    with pytest.raises(WeightsError, match=r"Meso4_F2F\.h5: MesoNet weight file not found"):
        load_meso4("Meso4_F2F", root=tmp_path)
    with pytest.raises(WeightsError, match="unknown MesoNet weights 'Meso5'; known: Meso4_DF, Meso4_F2F"):
        load_meso4("Meso5")


def test_the_vendored_folder_keeps_the_licence_and_the_attribution():
    readme = (WEIGHTS_DIR / "README.md").read_text()
    assert "Apache License 2.0" in readme and "DariusAf/MesoNet" in readme and "2144d56a" in readme
    assert "Apache License" in (WEIGHTS_DIR / "LICENSE").read_text()
    for name, sha in WEIGHTS.values():
        assert sha in readme, name
