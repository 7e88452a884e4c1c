"""Tests for napari_unet.progress and napari_unet.errors: the contract the GUI and CLI use."""

from __future__ import annotations

import threading

import pytest

from napari_unet import errors
from napari_unet.progress import CancelToken, check_cancel, report


def test_cancel_token() -> None:
    token = CancelToken()
    assert not token.cancelled
    check_cancel(token)
    check_cancel(None)
    thread = threading.Thread(target=token.cancel)
    thread.start()
    thread.join()
    assert token.cancelled
    with pytest.raises(errors.Cancelled):
        check_cancel(token)


def test_report() -> None:
    calls = []
    report(lambda d, t: calls.append((d, t)), 3, 7)
    report(None, 1, 1)
    assert calls == [(3, 7)]


@pytest.mark.parametrize("name", ["InvalidImageError", "InvalidLabelsError", "ImageReadError",
                                  "OutputWriteError", "ModelFileError", "ModelMismatchError",
                                  "DatasetError", "Cancelled"])
def test_every_error_is_a_napari_unet_error(name) -> None:
    assert issubclass(getattr(errors, name), errors.NapariUnetError)
