"""Settings: values the device decides when they are left at 0."""

from __future__ import annotations

from moderation.settings import CPU_BATCH_SIZE, CUDA_BATCH_SIZE, CUDA_TORCH_THREADS, load_settings


def test_encoder_batch_sizes_follow_the_device_unless_set() -> None:
    cpu = load_settings(device="cpu")
    assert (cpu.resolved_text_batch_size, cpu.resolved_image_batch_size) == (CPU_BATCH_SIZE, CPU_BATCH_SIZE) == (16, 16)
    cuda = load_settings(device="cuda")  # resolving the batch size does not need a GPU
    assert (cuda.resolved_text_batch_size, cuda.resolved_image_batch_size) == (CUDA_BATCH_SIZE, CUDA_BATCH_SIZE)
    chosen = load_settings(device="cuda", text_batch_size=64, image_batch_size=32)
    assert (chosen.resolved_text_batch_size, chosen.resolved_image_batch_size) == (64, 32)


def test_torch_threads_follow_the_device_unless_set() -> None:
    assert load_settings(device="cpu").resolved_torch_threads == 0  # torch's default: one per core
    assert load_settings(device="cuda").resolved_torch_threads == CUDA_TORCH_THREADS == 2
    assert load_settings(device="cuda", torch_threads=8).resolved_torch_threads == 8
    assert load_settings(device="cpu", torch_threads=1).resolved_torch_threads == 1


def test_prepare_priority_follows_the_device_unless_set() -> None:
    assert load_settings(device="cpu").resolved_prepare_priority == "idle"  # the models' threads keep the cores
    assert load_settings(device="cuda").resolved_prepare_priority == "normal"
    assert load_settings(device="cpu", prepare_priority="low").resolved_prepare_priority == "low"
