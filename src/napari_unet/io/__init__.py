"""Files in and out, without napari, Qt or torch: images read with their axes and pixel
size, label images checked and written, every output written atomically.

=================  ===========================================================================
module             what it holds
=================  ===========================================================================
``dispatch``       :func:`read_image`: sniffs the format (TIFF, PNG, JPEG, zarr), reads pictures
``tiff``           TIFF / OME-TIFF / ImageJ reading: axes, calibration, provenance
``tiff_checks``    what a TIFF declares checked against what it stores, before allocating
``tiff_lazy``      lazy TIFF reading: memory-mapped planes, or pieces that must fit in memory
``zarr``           zarr / OME-Zarr reading; OME-Zarr label stores written region by region
``labels``         what a label image is (:func:`check_labels`); reading labels and masks;
                   writing label TIFFs
``units``          the one table of units and their spellings; :func:`clean_calibration`
``ome_xml``        the parts of OME-XML that are read (first image, sizes, description)
``memory``         memory available, checked before allocating; sizes in words
``image``          :class:`ImageData`, what every reader returns; ``ArrayLike``, the arrays the core takes
``atomic``         atomic writing of files and folders
=================  ===========================================================================

Modules import only those below them in this order: ``labels`` > ``dispatch`` >
``tiff`` | ``zarr`` > ``tiff_checks`` | ``tiff_lazy`` > ``ome_xml`` | ``memory`` | ``units``
| ``image`` > ``atomic`` (import-linter checks it, see ``pyproject.toml``).
"""

from .atomic import atomic_folder, atomic_write
from .dispatch import file_name, image_stem, read_image
from .image import ArrayLike, ImageData
from .labels import check_labels, read_labels, read_mask, smallest_uint, write_labels
from .units import clean_calibration
from .zarr import create_labels, is_zarr, read_zarr

__all__ = [
    "ArrayLike",
    "ImageData",
    "atomic_folder",
    "atomic_write",
    "check_labels",
    "clean_calibration",
    "create_labels",
    "file_name",
    "image_stem",
    "is_zarr",
    "read_image",
    "read_labels",
    "read_mask",
    "read_zarr",
    "smallest_uint",
    "write_labels",
]
