"""Synthetic radiograph-like limb images for training, tests and benchmarks.

``generate_dataset`` writes an ImageFolder data set, ``generate_corpus`` a flat scoring
corpus, ``generate_archive`` archive-size 12-bit files, ``generate_studies`` MURA-like studies
(2-4 views of one limb, one label per study); ``write_contact_sheet`` shows
samples as the model sees them. Drawing lives in ``anatomy``, file formats in ``writers``.
"""
from fracture_batch.synth.contact_sheet import CONTACT_SHEET_NAME, write_contact_sheet
from fracture_batch.synth.generate import (
    MANIFEST_NAME,
    SynthConfig,
    SynthRecord,
    count_table,
    generate_archive,
    generate_corpus,
    generate_dataset,
    read_manifest,
    resolve_split_counts,
    size_range_for,
)
from fracture_batch.synth.dicom_archive import (
    ArchiveFile, DicomSyntax, available_syntaxes, generate_dicom_archive, syntax_available,
)
from fracture_batch.synth.studies import generate_studies, labels_csv_name
from fracture_batch.synth.writers import DEFAULT_FORMATS, ImageFormat, has_j2k_encoder

__all__ = [
    "ArchiveFile", "DicomSyntax", "available_syntaxes", "generate_dicom_archive", "syntax_available",
    "CONTACT_SHEET_NAME", "DEFAULT_FORMATS", "MANIFEST_NAME", "ImageFormat", "SynthConfig", "SynthRecord",
    "count_table", "generate_archive", "generate_corpus", "generate_dataset", "generate_studies", "has_j2k_encoder",
    "labels_csv_name",
    "read_manifest", "resolve_split_counts", "size_range_for", "write_contact_sheet",
]
