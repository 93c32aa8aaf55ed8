"""Make the JPEG and JPEG-LS versions of MR_small.dcm used by tests/dicom_io.rs.

Run from this folder: python make_jpeg.py
Needs pydicom 3.0.2, numpy >= 2, Pillow, imagecodecs (libjpeg-turbo >= 3.0 for
lossless JPEG), pyjpegls (CharLS, for pydicom's JPEG-LS encoder) and
pylibjpeg with pylibjpeg-libjpeg (a second JPEG decoder, for the checks).

Writes:
  MR_small_jpeg_baseline.dcm   JPEG baseline (1.2.840.10008.1.2.4.50), 8 bits,
                               the image scaled linearly from [min, max] to [0, 255]
  MR_small_jpeg_baseline.json  the values Pillow decodes from the same JPEG stream
  MR_small_jpeg_lossless_sv1.dcm  JPEG lossless process 14, predictor 1
                               (1.2.840.10008.1.2.4.70), the original 16-bit values
  MR_small_jpeg_lossless_p6.dcm   JPEG lossless process 14, predictor 6
                               (1.2.840.10008.1.2.4.57), the original 16-bit values
  MR_small_jpegls.dcm          JPEG-LS lossless (1.2.840.10008.1.2.4.80), the
                               original 16-bit values

Every file keeps the header of MR_small.dcm (geometry included) and differs only
in the pixel data, its transfer syntax and, for the 8-bit file, the pixel
description. The script checks each file by decoding it again.
"""

import copy
import io
import json

import imagecodecs
import numpy as np
import PIL
import pydicom
from PIL import Image, features
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
)

SOURCE = "MR_small.dcm"
BASELINE_QUALITY = 90


def load_source():
    ds = pydicom.dcmread(SOURCE)
    pixels = ds.pixel_array
    # JPEG lossless codes unsigned samples. Non-negative int16 values read the same as
    # uint16, so decoders cannot disagree about the sign (PixelRepresentation stays 1).
    assert pixels.dtype == np.int16, pixels.dtype
    assert pixels.min() >= 0, pixels.min()
    return ds, pixels


def with_encapsulated(ds, frame, transfer_syntax):
    """Returns a copy of ds with one encapsulated frame and the given transfer syntax."""
    # A deep copy, because setting an attribute changes a shared data element in place.
    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = transfer_syntax
    out.PixelData = encapsulate([frame])
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    return out


def scale_to_8_bits(pixels):
    low, high = int(pixels.min()), int(pixels.max())
    scaled = np.rint((pixels.astype(np.float64) - low) * 255.0 / (high - low))
    return scaled.astype(np.uint8)


def decode_with(path, plugin):
    ds = pydicom.dcmread(path)
    ds.pixel_array_options(decoding_plugin=plugin)
    return ds.pixel_array


def write_baseline(ds, pixels):
    eight_bit = scale_to_8_bits(pixels)
    buffer = io.BytesIO()
    Image.fromarray(eight_bit, mode="L").save(buffer, format="JPEG", quality=BASELINE_QUALITY)
    stream = buffer.getvalue()

    out = with_encapsulated(ds, stream, JPEGBaseline8Bit)
    out.BitsAllocated = 8
    out.BitsStored = 8
    out.HighBit = 7
    out.PixelRepresentation = 0
    out.PhotometricInterpretation = "MONOCHROME2"
    out.LossyImageCompression = "01"
    out.LossyImageCompressionRatio = f"{eight_bit.nbytes / len(stream):.4f}"[:16]
    out.LossyImageCompressionMethod = "ISO_10918_1"
    name = "MR_small_jpeg_baseline.dcm"
    out.save_as(name, enforce_file_format=True)

    # Pillow's decoding of the stream is the reference, and pydicom's Pillow
    # plugin must read the written file to the same values. JPEG decoders may
    # round the inverse DCT differently, so a second decoder is compared as well.
    decoded = np.asarray(Image.open(io.BytesIO(stream)))
    assert np.array_equal(decode_with(name, "pillow"), decoded)
    difference = np.abs(decode_with(name, "pylibjpeg").astype(int) - decoded)
    print(f"baseline: pylibjpeg-libjpeg vs Pillow: max {difference.max()}, {(difference > 0).sum()} pixels differ")
    print("baseline: max |decoded - 8-bit input| =", int(np.abs(decoded.astype(int) - eight_bit).max()))

    reference = {
        "_about": (
            "MR_small.dcm scaled linearly from [min, max] to [0, 255], then encoded as "
            "JPEG baseline by Pillow at the given quality (decoded_values: Pillow's decoding of "
            "that stream). Values are row-major, value[row * columns + column]."
        ),
        "transfer_syntax": str(JPEGBaseline8Bit),
        "rows": int(out.Rows),
        "columns": int(out.Columns),
        "quality": BASELINE_QUALITY,
        "encoder_and_decoder": f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}",
        "pydicom": pydicom.__version__,
        "other_decoder": {
            "name": "pylibjpeg-libjpeg (through pydicom's pylibjpeg plugin)",
            "max_difference": int(difference.max()),
            "pixels_differing": int((difference > 0).sum()),
        },
        "decoded_values": decoded.ravel().tolist(),
    }
    with open("MR_small_jpeg_baseline.json", "w") as f:
        json.dump(reference, f, separators=(",", ":"))
        f.write("\n")


def write_lossless(ds, pixels, predictor, transfer_syntax, name):
    samples = pixels.astype(np.uint16)
    stream = imagecodecs.jpeg8_encode(samples, lossless=True, predictor=predictor, bitspersample=16)
    assert np.array_equal(imagecodecs.jpeg8_decode(stream), samples)

    out = with_encapsulated(ds, bytes(stream), transfer_syntax)
    out.save_as(name, enforce_file_format=True)

    # pydicom decodes through pylibjpeg-libjpeg, a decoder independent of the encoder.
    assert np.array_equal(decode_with(name, "pylibjpeg"), pixels)
    print(f"{name}: {len(stream)} bytes, predictor {predictor}, libjpeg-turbo {imagecodecs.jpeg8_version()}")


def write_jpegls(ds, pixels):
    out = copy.deepcopy(ds)
    out.compress(JPEGLSLossless, encoding_plugin="pyjpegls", generate_instance_uid=False)
    out.save_as("MR_small_jpegls.dcm", enforce_file_format=True)
    assert np.array_equal(decode_with("MR_small_jpegls.dcm", "pyjpegls"), pixels)


def main():
    ds, pixels = load_source()
    write_baseline(ds, pixels)
    write_lossless(ds, pixels, 1, JPEGLosslessSV1, "MR_small_jpeg_lossless_sv1.dcm")
    write_lossless(ds, pixels, 6, JPEGLossless, "MR_small_jpeg_lossless_p6.dcm")
    write_jpegls(ds, pixels)


if __name__ == "__main__":
    main()
