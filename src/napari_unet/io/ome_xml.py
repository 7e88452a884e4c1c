"""The few things read from OME-XML (the header of an OME-TIFF): its first image, that
image's physical pixel sizes and description, element names without their namespace."""

from __future__ import annotations

from typing import Any, Optional
from xml.etree import ElementTree


def local_name(element: ElementTree.Element) -> str:
    """An XML element's name without its namespace (OME schemas differ by year)."""
    return element.tag.rsplit("}", 1)[-1]


def child(parent: ElementTree.Element, name: str) -> Optional[ElementTree.Element]:
    """First child called ``name``, whatever the OME schema namespace."""
    return next((el for el in parent if local_name(el) == name), None)


def first_image(xml: str) -> Optional[ElementTree.Element]:
    """The OME ``Image`` element that tifffile's ``series[0]`` reads."""
    try:
        return child(ElementTree.fromstring(xml), "Image")
    except ElementTree.ParseError:
        return None


def physical_sizes(xml: str) -> dict[str, tuple[Any, Optional[str]]]:
    """Raw PhysicalSize* of the first image, with their units (OME's default: µm)."""
    image = first_image(xml)
    pixels = child(image, "Pixels") if image is not None else None
    if pixels is None:
        return {}
    return {ax: (pixels.get(f"PhysicalSize{ax}"), pixels.get(f"PhysicalSize{ax}Unit", "µm"))
            for ax in "XYZ" if pixels.get(f"PhysicalSize{ax}") is not None}


def description(xml: str) -> Optional[str]:
    """The text of the first image's ``Description``, where napari-unet keeps provenance."""
    image = first_image(xml)
    element = child(image, "Description") if image is not None else None
    return element.text if element is not None else None
