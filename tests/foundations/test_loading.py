"""The batch source (robustsoup.data.loading) and the image decoders: the loader path gives exactly the
plain path's batches, training and evaluation read through it, and the decoders agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustsoup.data import FileSplit, ImageSplit, decode_image, options
from robustsoup.data.loading import BatchSource, loader_workers
from robustsoup.data.options import LoadingOptions
from robustsoup.device import compile_model
from robustsoup.evaluate.clean import evaluate_clean
from robustsoup.facts import JobFacts, job_facts
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import make_input_policy

from conftest import tiny_meta
from data_fixtures import write_png


def _photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photo-like uint8 image: a smooth random field with noise (random noise alone is no photo)."""
    from PIL import Image

    low = (rng.random((height // 20 + 2, width // 20 + 2, 3)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)


def _file_split(tmp_path, n: int = 22, resolution: int = 32, resize: int | None = 36) -> FileSplit:
    """``n`` JPEGs of mixed sizes and orientations (so every image is resized and cropped) as a file list."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        width, height = (50, 40) if i % 2 else (40, 57)
        path = tmp_path / "jpegs" / f"{i:03d}.JPEG"
        write_png(path, _photo(rng, width, height), "JPEG")
        paths.append(path)
    labels = torch.arange(n) % 10
    return FileSplit(paths, labels, "synthetic", "train", resolution=resolution, resize=resize)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_yields_the_plain_paths_batches_in_order(tmp_path, workers):
    split = _file_split(tmp_path)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(3))
    source = BatchSource(split, "cpu", workers=workers)
    assert source.kind == "files" and source.record()["loader_workers"] == workers
    rng_before = torch.get_rng_state()
    for _epoch in range(2):  # persistent workers: a second pass over another order
        got = list(source.batches(order, 5))
        assert [len(idx) for idx, _, _ in got] == [5, 5, 5, 5, 2]
        for b, (idx, images, labels) in enumerate(got):
            expected = order[b * 5 : (b + 1) * 5]
            assert torch.equal(idx, expected)
            assert torch.equal(images, split.load(expected)) and images.dtype == torch.uint8
            assert torch.equal(labels, split.labels[expected])
        order = order.flip(0)
    # The loader draws its workers' seeds from its own generator: the global RNG (resume state) is untouched.
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_a_decoded_split_on_the_cpu_is_indexed_in_place():
    images = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8)
    split = ImageSplit(images, torch.arange(9), "synthetic", "test")
    source = BatchSource(split, "cpu")
    assert source.kind == "memory" and source.images.data_ptr() == images.data_ptr()  # no copy
    (_idx, x, y), *_ = source.batches(torch.tensor([4, 1, 7]), 3)
    assert torch.equal(x, images[[4, 1, 7]]) and y.tolist() == [4, 1, 7]
    x, y = source.floats(1, 4)
    assert x.dtype == torch.float32 and torch.equal(x, images[1:4].float() / 255) and y.tolist() == [1, 2, 3]
    assert source.floats(9)[0].shape == (0, 3, 8, 8)


def test_auto_workers_are_none_off_cuda_and_the_jobs_cpus_less_one_on_cuda(monkeypatch):
    for variable in ("SLURM_CPUS_PER_GPU", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    assert loader_workers("auto", torch.device("cpu")) == 0
    assert loader_workers(3, torch.device("cpu")) == 3
    cuda = torch.device("cuda")  # a device type only; nothing is allocated
    threads = torch.get_num_threads()
    assert loader_workers("auto", cuda) == max(1, threads - 1)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert loader_workers("auto", cuda) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks share the task's CPUs
    assert loader_workers("auto", cuda) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert loader_workers("auto", cuda) == 7
    monkeypatch.setenv("SLURM_CPUS_PER_GPU", "9")  # per GPU wins over per task
    assert loader_workers("auto", cuda) == 8
    monkeypatch.setenv("SLURM_CPUS_PER_GPU", "1")
    assert loader_workers("auto", cuda) == 1


def test_loading_options_refuse_bad_keys_and_configure_sets_them():
    with pytest.raises(ValueError, match="data.decoder.*torchvision, pil.*found 'cv2'"):
        LoadingOptions(decoder="cv2")
    with pytest.raises(ValueError, match="data.loader_workers.*found -1"):
        LoadingOptions(loader_workers=-1)
    previous = options.configure({"decoder": "pil", "loader_workers": 2})
    try:
        assert options.current() == LoadingOptions("pil", 2)
    finally:
        options.OPTIONS = previous


def test_training_on_a_file_list_through_loader_workers_equals_training_on_its_decoded_images(tmp_path):
    split = _file_split(tmp_path, n=20)
    split.dataset = "cifar10"  # its standard augmentation: padded crop and flip, drawn per batch
    decoded = ImageSplit(split.load(torch.arange(len(split))), split.labels, "cifar10", "train")

    def train(data, workers):
        previous = options.configure({"loader_workers": workers})
        try:
            torch.manual_seed(0)
            model = tiny_meta().build()
            settings = TrainSettings(epochs=2, lr=0.1, batch_size=8, augmentation="standard")
            history = train_model(model, data, make_input_policy("Linf", {"Linf": 0.1}, 2), settings, "cpu")
            return model, history
        finally:
            options.OPTIONS = previous

    reference, history = train(decoded, "auto")
    for workers in (0, 2):
        model, rows = train(split, workers)
        assert [r["loss"] for r in rows] == [r["loss"] for r in history]
        for key, tensor in reference.state_dict().items():
            assert torch.equal(tensor, model.state_dict()[key]), (workers, key)


def test_clean_evaluation_of_a_file_list_equals_that_of_its_decoded_images(tmp_path, tiny_model):
    split = _file_split(tmp_path, n=12)
    decoded = ImageSplit(split.load(torch.arange(len(split))), split.labels, "synthetic", "train")
    row, points = evaluate_clean(tiny_model, "tiny", split, batch_size=5)
    row_decoded, points_decoded = evaluate_clean(tiny_model, "tiny", decoded, batch_size=5)
    assert row.equals(row_decoded) and points.equals(points_decoded) and int(row["n"].iloc[0]) == 12


def test_the_decoders_agree_within_one_grey_level(tmp_path):
    rng = np.random.default_rng(1)
    jpeg = tmp_path / "photo.JPEG"
    write_png(jpeg, _photo(rng, 500, 375), "JPEG")
    pil = decode_image(jpeg, 224, 256, decoder="pil").int()
    tv = decode_image(jpeg, 224, 256, decoder="torchvision").int()
    assert pil.shape == tv.shape == (3, 224, 224)
    assert (pil - tv).abs().max() <= 1  # the same JPEG pixels; the resizes round differently, rarely
    assert (pil != tv).float().mean() < 0.02
    # No resize: an image already at the resolution decodes to the same pixels either way (JPEG and PNG).
    exact = tmp_path / "exact.JPEG"
    write_png(exact, _photo(rng, 64, 64), "JPEG")
    assert torch.equal(decode_image(exact, 64, decoder="pil"), decode_image(exact, 64, decoder="torchvision"))
    png = tmp_path / "exact.png"
    write_png(png, _photo(rng, 64, 64), "PNG")
    assert torch.equal(decode_image(png, 64, decoder="pil"), decode_image(png, 64, decoder="torchvision"))
    # A format torchvision.io does not read is decoded by Pillow either way.
    bmp = tmp_path / "small.bmp"
    write_png(bmp, _photo(rng, 48, 40), "BMP")
    assert torch.equal(decode_image(bmp, 32, decoder="pil"), decode_image(bmp, 32, decoder="torchvision"))
    with pytest.raises(ValueError, match="unknown image decoder 'cv2'"):
        decode_image(png, 64, decoder="cv2")


def test_the_compile_key_wraps_the_model_sharing_its_weights_and_is_recorded():
    from robustsoup.run_config import resolve_config
    from robustsoup.snakemake_job import job_record
    from robustsoup.train.run import settings_from

    config = resolve_config({"pretrain": {"compile": True}})
    assert resolve_config({})["pretrain"]["compile"] is False
    settings = settings_from(config["pretrain"], seed=0, decay_all=False)
    record: dict = {}
    settings.resolved(torch.device("cpu"), record)
    assert settings.compile is True and record["compile"] is True
    model = tiny_meta().build()
    with job_facts() as facts:
        assert compile_model(model, False) is model
        # torch.compile compiles at the first call; a tiny model's training took 167 s to compile on the
        # 2-core CPU this was written on (18 s eager), so no test runs a compiled model.
        compiled = compile_model(model, True)
    assert compiled is not model and {id(p) for p in compiled.parameters()} == {id(p) for p in model.parameters()}
    assert " compile=false+true " in job_record("pretrain", inside_s=1.0, facts=facts)
    assert " compile=false " in job_record("pretrain", inside_s=1.0, facts=JobFacts())


def test_the_job_record_says_how_splits_were_batched(tmp_path):
    from robustsoup.snakemake_job import job_record

    split = ImageSplit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2), "digits", "test")
    with job_facts() as facts:
        assert " batches=none " in job_record("evaluate_model", inside_s=1.0, facts=facts)
        BatchSource(split, "cpu")
        BatchSource(_file_split(tmp_path, n=2), "cpu", workers=0, decoder="pil")
        BatchSource(split, "cpu")
        assert " batches=memory+files/0w/pil " in job_record("evaluate_model", inside_s=1.0, facts=facts)
    BatchSource(split, "cpu")  # outside a job: noted nowhere
    assert [r["batches"] for r in facts.batches] == ["memory", "files"]
