//! Tensors in and out in NumPy's `.npy` format (`numpy.save` / `numpy.load`), read
//! and written with the `npyz` crate.
//!
//! kiln reads and writes the dtypes of its own tensors: float32 (`<f4`), int32
//! (`<i4`) and bool (`|b1`), in C (row-major) order. Files are written little-endian;
//! big-endian files (`>f4`, `>i4`) are read too, since `npyz` swaps their bytes.
//! Other dtypes are refused by name rather than converted, so a float64 array is
//! not silently rounded.

use crate::fsutil::{self, WriteError};
use kiln_ir::{DType, Tensor, TensorType};
use npyz::{Order, TypeChar, WriterBuilder};
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an `.npy` file could not be read or written.
#[derive(Debug, Error)]
pub enum NpyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file could not be written (see `WriteError`).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Not an `.npy` file, or a header `npyz` cannot parse (its reason).
    #[error("{path}: not a valid .npy file: {reason}")]
    Format { path: PathBuf, reason: String },
    /// A dtype kiln has no tensors of.
    #[error(
        "{path}: the array's dtype is {found}; kiln reads float32 ('<f4'), int32 ('<i4') \
         and bool ('|b1')"
    )]
    Dtype { path: PathBuf, found: String },
    /// Column-major data (`numpy.asfortranarray`); kiln's tensors are row-major.
    #[error(
        "{path}: the array is in Fortran order; kiln reads C order (save \
         numpy.ascontiguousarray(a) instead)"
    )]
    FortranOrder { path: PathBuf },
    /// The data after the header is not as long as the header's shape and dtype
    /// say: a truncated file, or one with bytes after the array.
    #[error("{path}: {}", describe_length(*expected, *found, shape))]
    DataLength {
        path: PathBuf,
        shape: Vec<usize>,
        /// Bytes of data the header implies.
        expected: usize,
        /// Bytes of data the file has after its header.
        found: usize,
    },
    /// The values do not make a kiln tensor (a bool byte other than 0 or 1, a shape
    /// beyond kiln's size limit, or no memory for it).
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn describe_length(expected: usize, found: usize, shape: &[usize]) -> String {
    if found < expected {
        format!(
            "truncated: the header's shape {shape:?} needs {expected} bytes of data, but the \
             file has {found}"
        )
    } else {
        format!(
            "{} bytes after the data: the header's shape {shape:?} needs {expected} bytes, but \
             the file has {found}",
            found - expected
        )
    }
}

/// Reads the `.npy` file at `path` as a tensor.
pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes, path)
}

/// Writes `tensor` to `path` as an `.npy` file, atomically (see `fsutil`).
pub fn write(path: &Path, tensor: &Tensor) -> Result<(), NpyError> {
    let bytes = to_bytes(tensor, path)?;
    fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Parses the bytes of an `.npy` file; `path` is where they came from, named in
/// errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Tensor, NpyError> {
    let format = |reason: String| NpyError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut data = bytes;
    let header = npyz::NpyHeader::from_reader(&mut data).map_err(|err| format(err.to_string()))?;
    let (dtype, item_size) = match header.dtype() {
        npyz::DType::Plain(ty) => match (ty.type_char(), ty.size_field()) {
            (TypeChar::Float, 4) => (DType::F32, 4usize),
            (TypeChar::Int, 4) => (DType::I32, 4),
            (TypeChar::Bool, 1) => (DType::Bool, 1),
            _ => {
                return Err(NpyError::Dtype {
                    path: path.to_path_buf(),
                    found: format!("'{ty}'"),
                })
            }
        },
        other => {
            return Err(NpyError::Dtype {
                path: path.to_path_buf(),
                found: other.descr(),
            })
        }
    };
    if header.order() == Order::Fortran && header.shape().len() > 1 {
        return Err(NpyError::FortranOrder {
            path: path.to_path_buf(),
        });
    }
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&extent| usize::try_from(extent))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format(format!(
                "shape {:?} does not fit this machine",
                header.shape()
            ))
        })?;
    // Checked here rather than left to the reader, so a corrupt header claiming a
    // huge shape fails by its numbers before any memory is taken for it.
    let expected = shape
        .iter()
        .try_fold(item_size, |bytes, &extent| bytes.checked_mul(extent))
        .ok_or_else(|| format(format!("shape {shape:?} overflows")))?;
    if data.len() != expected {
        return Err(NpyError::DataLength {
            path: path.to_path_buf(),
            shape,
            expected,
            found: data.len(),
        });
    }
    let ty = TensorType::new(dtype, shape);
    kiln_ir::types::check_size("npy", &ty.shape).map_err(|err| NpyError::Invalid {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })?;
    let file = npyz::NpyFile::with_header(header, data);
    let invalid = |reason: String| NpyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let tensor = match dtype {
        DType::F32 => {
            let values: Vec<f32> = file.into_vec().map_err(|err| format(err.to_string()))?;
            Tensor::f32(ty.shape, &values)
        }
        DType::I32 => {
            let values: Vec<i32> = file.into_vec().map_err(|err| format(err.to_string()))?;
            Tensor::i32(ty.shape, &values)
        }
        DType::Bool => {
            let values: Vec<bool> = file.into_vec().map_err(|err| invalid(err.to_string()))?;
            let values = values.into_iter().map(|b| f64::from(u8::from(b))).collect();
            Tensor::new(ty, values)
        }
    };
    tensor.map_err(|err| invalid(err.to_string()))
}

/// The bytes of `tensor` as an `.npy` file (little-endian, C order); `path` is
/// where they will go, named in errors.
pub fn to_bytes(tensor: &Tensor, path: &Path) -> Result<Vec<u8>, NpyError> {
    let shape: Vec<u64> = tensor.shape().iter().map(|&extent| extent as u64).collect();
    let written = match tensor.dtype() {
        DType::F32 => encode(&shape, "<f4", tensor.to_f32()),
        DType::I32 => encode(&shape, "<i4", tensor.to_i32()),
        DType::Bool => encode(
            &shape,
            "|b1",
            tensor.data().iter().map(|&value| value != 0.0).collect(),
        ),
    };
    written.map_err(|err| NpyError::Invalid {
        path: path.to_path_buf(),
        reason: format!("cannot encode a tensor {}: {err}", tensor.ty()),
    })
}

fn encode<T: npyz::Serialize>(shape: &[u64], descr: &str, values: Vec<T>) -> io::Result<Vec<u8>> {
    let type_str: npyz::TypeStr = descr
        .parse()
        .map_err(|err| io::Error::other(format!("type {descr}: {err}")))?;
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .dtype(npyz::DType::Plain(type_str))
        .shape(shape)
        .writer(&mut bytes)
        .begin_nd()?;
    writer.extend(values)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("t.npy")
    }

    fn round_trip(tensor: &Tensor) -> Tensor {
        let bytes = to_bytes(tensor, path()).unwrap();
        from_bytes(&bytes, path()).unwrap()
    }

    #[test]
    fn f32_round_trips_bit_for_bit_at_odd_shapes() {
        let special = [
            0.0,
            -0.0,
            1.5,
            -3.25e-38,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
        ];
        for shape in [vec![7], vec![3, 1, 2], vec![1, 1, 1, 7]] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| special[i % special.len()]).collect();
            let tensor = Tensor::f32(shape.clone(), &values).unwrap();
            let back = round_trip(&tensor);
            assert_eq!(back.shape(), &shape[..]);
            assert_eq!(back.dtype(), DType::F32);
            let bits: Vec<u32> = back.to_f32().iter().map(|v| v.to_bits()).collect();
            let expected: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bits, expected);
        }
    }

    #[test]
    fn i32_and_bool_round_trip() {
        let ints = Tensor::i32(vec![2, 3], &[i32::MIN, -1, 0, 1, 7, i32::MAX]).unwrap();
        assert_eq!(round_trip(&ints), ints);
        let ty = TensorType::new(DType::Bool, vec![2, 2]);
        let bools = Tensor::new(ty, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        assert_eq!(round_trip(&bools), bools);
    }

    #[test]
    fn a_scalar_and_empty_arrays_round_trip() {
        let scalar = Tensor::f32(Vec::<usize>::new(), &[2.5]).unwrap();
        assert_eq!(round_trip(&scalar), scalar);
        for shape in [vec![0], vec![3, 0], vec![0, 4, 2]] {
            let empty = Tensor::i32(shape.clone(), &[]).unwrap();
            let back = round_trip(&empty);
            assert_eq!(back.shape(), &shape[..]);
            assert!(back.is_empty());
        }
    }

    /// The bytes `numpy.save` writes for `np.array([[1, 2, 3], [4, 5, 6]], np.int32)`:
    /// version 1.0, header padded to a multiple of 64 bytes.
    fn numpy_i32_2x3(descr: &str, fortran: bool) -> Vec<u8> {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': (2, 3), }}",
            if fortran { "True" } else { "False" }
        );
        let mut header = dict.into_bytes();
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header);
        for value in 1..=6i32 {
            if descr.starts_with('>') {
                bytes.extend(value.to_be_bytes());
            } else {
                bytes.extend(value.to_le_bytes());
            }
        }
        bytes
    }

    #[test]
    fn reads_what_numpy_writes_in_either_byte_order() {
        for descr in ["<i4", ">i4"] {
            let tensor = from_bytes(&numpy_i32_2x3(descr, false), path()).unwrap();
            assert_eq!(
                tensor,
                Tensor::i32(vec![2, 3], &[1, 2, 3, 4, 5, 6]).unwrap()
            );
        }
    }

    /// What `numpy.save` would write, but for the shape tuple, which `npyz` writes as
    /// `(2, 3, )`: the same Python value, which `numpy.load` reads.
    #[test]
    fn writes_what_numpy_writes() {
        let tensor = Tensor::i32(vec![2, 3], &[1, 2, 3, 4, 5, 6]).unwrap();
        let bytes = to_bytes(&tensor, path()).unwrap();
        let numpy = numpy_i32_2x3("<i4", false);
        assert_eq!(bytes.len(), numpy.len());
        assert_eq!(
            bytes[..10],
            numpy[..10],
            "magic, version 1.0, header length"
        );
        let header = String::from_utf8_lossy(&bytes[10..128]);
        assert!(
            header.starts_with("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3, ), }"),
            "{header}"
        );
        assert_eq!(bytes[128..], numpy[128..], "the data");
    }

    #[test]
    fn errors_name_the_file_and_what_was_wrong() {
        let err = |bytes: &[u8]| from_bytes(bytes, path()).unwrap_err().to_string();
        let good = numpy_i32_2x3("<i4", false);
        assert_eq!(
            err(&good[..good.len() - 5]),
            "t.npy: truncated: the header's shape [2, 3] needs 24 bytes of data, but the file \
             has 19"
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            err(&long),
            "t.npy: 1 bytes after the data: the header's shape [2, 3] needs 24 bytes, but the \
             file has 25"
        );
        assert_eq!(
            err(&numpy_i32_2x3("<f8", false)),
            "t.npy: the array's dtype is '<f8'; kiln reads float32 ('<f4'), int32 ('<i4') and \
             bool ('|b1')"
        );
        assert_eq!(
            err(&numpy_i32_2x3("<i4", true)),
            "t.npy: the array is in Fortran order; kiln reads C order (save \
             numpy.ascontiguousarray(a) instead)"
        );
        assert!(
            err(b"PK\x03\x04 a zip file").starts_with("t.npy: not a valid .npy file: "),
            "{}",
            err(b"PK\x03\x04 a zip file")
        );
        assert!(err(&good[..20]).starts_with("t.npy: not a valid .npy file: "));
        assert!(err(b"").starts_with("t.npy: not a valid .npy file: "));
    }

    #[test]
    fn a_bool_byte_other_than_0_or_1_is_an_error() {
        let ty = TensorType::new(DType::Bool, vec![2]);
        let mut bytes = to_bytes(&Tensor::new(ty, vec![1.0, 0.0]).unwrap(), path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = 7;
        let err = from_bytes(&bytes, path()).unwrap_err().to_string();
        assert!(err.starts_with("t.npy: ") && err.contains('7'), "{err}");
    }
}
