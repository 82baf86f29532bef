"""Writes, with pydicom, the kinds of objects a real archive sends that diptych once refused
(issue #10): colour layouts, palette colour, non-image objects, and file meta groups with
slightly malformed UIDs.

Usage: archive_objects.py OUT_DIR

Every image holds the same known picture, so the test can compare the decoded luma against it:
RGB(x, y) = ((4x) % 256, (5y) % 256, (3(x + y)) % 256) on 64 columns x 48 rows; palette images
hold index (x + 2y) % 256 (8-bit) or 1000 + (x + 2y) % 256 (16-bit) through the LUT
R = i, G = 255 - i, B = (7i) % 256 (entries scaled by 257 when they are 16-bit). The 32-bit
monochrome images hold stored value 40000 * (x + 2y) - 2000000 (signed) or 40000 * (x + 2y) + 3
(unsigned), with Rescale Slope 0.25 and Intercept -10.
"""

import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROWS, COLS = 48, 64
SC = "1.2.840.10008.5.1.4.1.1.7"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
BASIC_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PREFIX = "1.2.826.0.1.3680043.10.1047.10."


def known_rgb():
    y, x = np.mgrid[0:ROWS, 0:COLS]
    return np.stack([(4 * x) % 256, (5 * y) % 256, (3 * (x + y)) % 256], axis=-1).astype(np.uint8)


def palette_index():
    y, x = np.mgrid[0:ROWS, 0:COLS]
    return (x + 2 * y) % 256


def base(sop_class, n):
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{PREFIX}{n}"
    ds.StudyInstanceUID = f"{PREFIX}100"
    ds.SeriesInstanceUID = f"{PREFIX}200.{n}"
    ds.PatientID = "ARCHIVE"
    ds.PatientName = "Archive^Test"
    ds.Modality = "OT"
    return ds


def image(ds, photometric, samples, bits, pixel_bytes, planar=None):
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if planar is not None:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixel_bytes
    return ds


def save(ds, path, ts=ExplicitVRLittleEndian):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PREFIX + "999"
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def ybr_full(rgb):
    """PS3.3 C.7.6.3.1.2 YBR_FULL from RGB, rounded and clipped to 8 bits."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def lut(bits):
    i = np.arange(256)
    channels = [i, 255 - i, (7 * i) % 256]
    if bits == 16:
        return [(c * 257).astype("<u2").tobytes() for c in channels]
    return [c.astype(np.uint8).tobytes() for c in channels]


def palette(ds, index_bits, entry_bits, first):
    index = palette_index() + first
    dtype = np.uint8 if index_bits == 8 else "<u2"
    image(ds, "PALETTE COLOR", 1, index_bits, index.astype(dtype).tobytes())
    for name, data in zip(("Red", "Green", "Blue"), lut(entry_bits)):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, first, entry_bits])
        setattr(ds, f"{name}PaletteColorLookupTableData", data)
    return ds


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    rgb = known_rgb()

    save(image(base(SC, 1), "RGB", 3, 8, rgb.tobytes(), planar=0), out / "rgb.dcm")
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    save(image(base(SC, 2), "RGB", 3, 8, planar.tobytes(), planar=1), out / "rgb_planar.dcm")
    ybr = ybr_full(rgb)
    save(image(base(US, 3), "YBR_FULL", 3, 8, ybr.tobytes(), planar=0), out / "ybr_full.dcm")
    ybr_planar = np.ascontiguousarray(ybr.transpose(2, 0, 1))
    save(
        image(base(US, 4), "YBR_FULL", 3, 8, ybr_planar.tobytes(), planar=1),
        out / "ybr_full_planar.dcm",
    )
    # YBR_FULL_422 uncompressed (PS3.5 8.2.1): Y1 Y2 Cb Cr per horizontal pair, the chroma of
    # the pair averaged.
    pairs = ybr.reshape(ROWS, COLS // 2, 2, 3).astype(np.uint16)
    packed = np.stack(
        [
            pairs[:, :, 0, 0],
            pairs[:, :, 1, 0],
            (pairs[:, :, 0, 1] + pairs[:, :, 1, 1] + 1) // 2,
            (pairs[:, :, 0, 2] + pairs[:, :, 1, 2] + 1) // 2,
        ],
        axis=-1,
    ).astype(np.uint8)
    save(image(base(US, 5), "YBR_FULL_422", 3, 8, packed.tobytes(), planar=0), out / "ybr_full_422.dcm")

    save(palette(base(US, 6), 8, 16, 0), out / "palette8_lut16.dcm")
    save(palette(base(SC, 7), 8, 8, 0), out / "palette8_lut8.dcm")
    save(palette(base(US, 8), 16, 16, 1000), out / "palette16_lut16.dcm")
    segmented = palette(base(US, 9), 8, 16, 0)
    for name in ("Red", "Green", "Blue"):
        # One discrete segment of 256 entries (PS3.3 C.7.9.2): opcode 0, length, values.
        setattr(
            segmented,
            f"Segmented{name}PaletteColorLookupTableData",
            np.concatenate([[0, 256], np.arange(256) * 257]).astype("<u2").tobytes(),
        )
        delattr(segmented, f"{name}PaletteColorLookupTableData")
    save(segmented, out / "palette_segmented.dcm")

    # 32-bit monochrome images (secondary capture; CT and PET reconstructions from research
    # tools write them too): unsigned and signed, rescaled, one of them two frames.
    y, x = np.mgrid[0:ROWS, 0:COLS]
    for n, name, signed, offset, frames in ((10, "mono32_unsigned", 0, 3, 1), (11, "mono32_signed", 1, -2_000_000, 2)):
        ds = base(SC, n)
        stored = (40_000 * (x + 2 * y) + offset).astype("<i4" if signed else "<u4")
        image(ds, "MONOCHROME2", 1, 32, np.concatenate([stored.ravel()] * frames).tobytes())
        ds.PixelRepresentation = signed
        ds.RescaleSlope = "0.25"
        ds.RescaleIntercept = "-10"
        if frames > 1:
            ds.NumberOfFrames = frames
        save(ds, out / f"{name}.dcm")

    # Non-image objects: a 1-bit segmentation, a 32-bit dose grid, a plan, a report.
    seg = base(SEG, 20)
    seg.Modality = "SEG"
    mask = np.zeros((2, ROWS, COLS), dtype=np.uint8)
    mask[0, 10:30, 10:40] = 1
    mask[1, 5:15, 20:60] = 1
    seg.NumberOfFrames = 2
    seg.SegmentationType = "BINARY"
    image(seg, "MONOCHROME2", 1, 1, pydicom.pixels.pack_bits(mask.ravel()))
    save(seg, out / "seg.dcm")
    dose = base(RT_DOSE, 21)
    dose.Modality = "RTDOSE"
    dose.NumberOfFrames = 3
    dose.DoseUnits = "GY"
    dose.DoseType = "PHYSICAL"
    dose.DoseGridScaling = 1e-5
    grid = (np.arange(3 * ROWS * COLS) * 997 % 4_000_000).astype("<u4")
    image(dose, "MONOCHROME2", 1, 32, grid.tobytes())
    dose.FrameIncrementPointer = 0x3004000C
    dose.GridFrameOffsetVector = [0, 2, 4]
    save(dose, out / "rtdose.dcm")
    plan = base(RT_PLAN, 22)
    plan.Modality = "RTPLAN"
    plan.RTPlanLabel = "ARCHIVE"
    save(plan, out / "rtplan.dcm")
    sr = base(BASIC_SR, 23)
    sr.Modality = "SR"
    sr.ValueType = "CONTAINER"
    sr.ContinuityOfContent = "SEPARATE"
    save(sr, out / "sr.dcm")

    # File meta groups with slightly malformed UIDs around a good RGB data set.
    def meta_variant(name, n, edit, ts_padding=b"\0", patch=None):
        ds = image(base(SC, n), "RGB", 3, 8, rgb.tobytes(), planar=0)
        save(ds, out / name)
        ds = pydicom.dcmread(out / name)
        edit(ds.file_meta, ds)
        ds.save_as(out / name, enforce_file_format=False)
        # pydicom will not write a padded Transfer Syntax UID itself: swap its NUL padding.
        data = (out / name).read_bytes()
        ts = ExplicitVRLittleEndian.encode()
        data = data.replace(ts + b"\0", ts + ts_padding, 1)
        if patch:
            data = data.replace(patch[0], patch[1], 1)
        (out / name).write_bytes(data)

    def trailing_space(meta, ds):
        meta.MediaStorageSOPClassUID = SC + " "

    def trailing_nul(meta, ds):
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + "\0\0"

    def leading_zero(meta, ds):
        meta.MediaStorageSOPInstanceUID = PREFIX + "032.07"
        meta.ImplementationClassUID = "1.2.03.4"

    def differs_in_padding(meta, ds):
        pass

    meta_variant("meta_trailing_space.dcm", 30, trailing_space, ts_padding=b" ")
    meta_variant("meta_trailing_nul.dcm", 31, trailing_nul)
    meta_variant("meta_leading_zero.dcm", 32, leading_zero)
    # The meta group's copy of the SOP Instance UID padded with a space, the data set's with a NUL.
    uid = f"{PREFIX}33".encode()
    meta_variant("meta_padding_differs.dcm", 33, differs_in_padding, patch=(uid + b"\0", uid + b" "))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
