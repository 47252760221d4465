//! Reads a safetensors checkpoint tensor by tensor with positioned reads.
//!
//! A memory map would do the same work, but every page it touches stays resident until the map is
//! dropped, so loading would briefly hold the checkpoint twice (mapped file and converted copies):
//! 1.2 GB instead of 0.6 GB for ViT-B/16 in f32.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

#[derive(Debug)]
pub struct SafetensorsFile {
    file: File,
    path: PathBuf,
    data_start: u64,
    entries: HashMap<String, Entry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidWeights { path: path.to_path_buf(), reason };
        let mut file = File::open(path).map_err(Error::io(path))?;
        let file_len = file.metadata().map_err(Error::io(path))?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(|_| invalid("too short for a safetensors header".into()))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > 100 << 20 || 8 + header_len > file_len {
            return Err(invalid(format!("header length {header_len} does not fit the file")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(Error::io(path))?;
        let mut raw: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| invalid(format!("unreadable header: {e}")))?;
        raw.remove("__metadata__");
        let data_len = file_len - 8 - header_len;
        let mut entries = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            let entry: Entry = serde_json::from_value(value).map_err(|e| invalid(format!("tensor {name}: {e}")))?;
            let dtype =
                file_dtype(&entry.dtype).ok_or_else(|| invalid(format!("tensor {name}: dtype {}", entry.dtype)))?;
            let (start, end) = entry.data_offsets;
            let expected = entry.shape.iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64;
            if start > end || end > data_len || end - start != expected {
                return Err(invalid(format!("tensor {name}: data offsets {start}..{end} do not match its shape")));
            }
            entries.insert(name, entry);
        }
        Ok(Self { file, path: path.to_path_buf(), data_start: 8 + header_len, entries })
    }

    fn read(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let entry =
            self.entries.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() })?;
        let (start, end) = entry.data_offsets;
        let mut bytes = vec![0u8; (end - start) as usize];
        read_at(&self.file, &mut bytes, self.data_start + start)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", self.path.display())))?;
        let stored = file_dtype(&entry.dtype).expect("checked when the header was read");
        Tensor::from_raw_buffer(&bytes, stored, &entry.shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }
}

fn file_dtype(name: &str) -> Option<DType> {
    name.to_ascii_lowercase().parse().ok()
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

impl candle_nn::var_builder::SimpleBackend for SafetensorsFile {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.read(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}
