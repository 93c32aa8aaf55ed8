//! Siemens private attributes: the CSA headers, (0029,xx10) CSA Image Header Info
//! and (0029,xx20) CSA Series Header Info, and the "SIEMENS MR HEADER" block of
//! group 0019 (B_value, DiffusionGradientDirection).
//!
//! A CSA header in the "SV10" format (syngo MR VB and later) starts with `SV10`, 4
//! unused bytes, the number of tags (u32) and the value 77 (u32). Then come, per tag, a 64-byte
//! NUL-terminated name, VM (i32), a 4-byte VR, SyngoDT (i32), the number of items
//! (i32) and 77 or 205 (i32), then per item four i32 lengths and the item's bytes,
//! padded to a multiple of 4. The second length is the item length. Item values are
//! NUL-terminated text, numbers included. All integers are little-endian. The older
//! format without the `SV10` magic is not read.

use std::collections::HashMap;

use dicom_core::VR;
use dicom_object::{InMemDicomObject, Tag};

/// Upper bound on the number of tags in one header (nibabel 5.4 uses 128 too).
const MAX_TAGS: u32 = 128;

/// The elements of one CSA header, by name: each a list of item strings, trimmed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CsaHeader {
    pub elements: HashMap<String, Vec<String>>,
}

impl CsaHeader {
    /// Parses the items of `name` as numbers (`None` when absent or when any item is not a number).
    pub fn numbers(&self, name: &str) -> Option<Vec<f64>> {
        let items = self.elements.get(name)?;
        items.iter().map(|s| s.parse::<f64>().ok()).collect()
    }

    pub fn number(&self, name: &str) -> Option<f64> {
        self.numbers(name)?.first().copied()
    }

    /// Finds the value of `key` in the `### ASCCONV BEGIN ###` block of MrPhoenixProtocol
    /// (a series header element), e.g. `sSliceArray.lSize`.
    pub fn protocol_value(&self, key: &str) -> Option<String> {
        let protocol = self.elements.get("MrPhoenixProtocol")?.first()?;
        let block = protocol.split("### ASCCONV BEGIN").nth(1)?;
        let block = block.split("### ASCCONV END").next()?;
        block.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == key).then(|| value.trim().trim_matches('"').to_string())
        })
    }
}

/// Parses an SV10 CSA header; the error is a short description of the problem.
pub fn parse(bytes: &[u8]) -> std::result::Result<CsaHeader, String> {
    if bytes.get(0..4) != Some(b"SV10".as_slice()) {
        return Err("not an SV10 CSA header (the older CSA1 format is not supported)".to_string());
    }
    let mut reader = Reader { bytes, at: 8 };
    let n_tags = reader.u32()?;
    if n_tags == 0 || n_tags > MAX_TAGS {
        return Err(format!("CSA header declares {n_tags} tags (1 to {MAX_TAGS} expected)"));
    }
    reader.u32()?; // 77

    let mut header = CsaHeader::default();
    for _ in 0..n_tags {
        let name = text(reader.take(64)?);
        let _vm = reader.i32()?;
        let _vr = reader.take(4)?;
        let _syngo_dt = reader.i32()?;
        let n_items = reader.i32()?;
        reader.i32()?; // 77 or 205
        if n_items < 0 || n_items as usize > bytes.len() / 16 {
            return Err(format!("CSA element {name} declares {n_items} items"));
        }

        let mut items = Vec::with_capacity(n_items as usize);
        for _ in 0..n_items {
            let lengths = [reader.i32()?, reader.i32()?, reader.i32()?, reader.i32()?];
            let length = usize::try_from(lengths[1]).map_err(|_| format!("CSA element {name}: negative item length"))?;
            let padded = length.div_ceil(4) * 4;
            let data = reader.take(padded)?;
            items.push(text(&data[..length]));
        }
        items.retain(|s| !s.is_empty());
        header.elements.insert(name, items);
    }
    Ok(header)
}

/// Text up to the first NUL, trimmed.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("CSA header is truncated at byte {} of {}", self.at, self.bytes.len()));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> std::result::Result<i32, String> {
        Ok(self.u32()? as i32)
    }
}

/// Finds the element `(group, block << 8 | element)` of the private block that `creator`
/// reserved in `group` (a Private Creator at `(group, 0x0010..=0x00FF)`).
pub fn private_element<'a>(
    object: &'a InMemDicomObject,
    group: u16,
    creator: &str,
    element: u8,
) -> Option<&'a dicom_object::mem::InMemElement> {
    let block = (0x10u16..=0xFF).find(|&e| {
        object
            .element_opt(Tag(group, e))
            .ok()
            .flatten()
            .and_then(|el| el.to_str().ok())
            .is_some_and(|v| v.trim_matches(|c: char| c == '\0' || c.is_whitespace()) == creator)
    })?;
    object.element_opt(Tag(group, block << 8 | u16::from(element))).ok().flatten()
}

/// Reads the CSA image header (`Some(Err)` when present but unreadable).
pub fn image_header(object: &InMemDicomObject) -> Option<std::result::Result<CsaHeader, String>> {
    csa_element(object, 0x10)
}

/// Reads the CSA series header (`Some(Err)` when present but unreadable).
pub fn series_header(object: &InMemDicomObject) -> Option<std::result::Result<CsaHeader, String>> {
    csa_element(object, 0x20)
}

fn csa_element(object: &InMemDicomObject, element: u8) -> Option<std::result::Result<CsaHeader, String>> {
    let element = private_element(object, 0x0029, "SIEMENS CSA HEADER", element)?;
    let bytes = element.to_bytes().ok()?;
    Some(parse(&bytes))
}

/// NumberOfImagesInMosaic (0019,xx0A), VR US.
pub fn images_in_mosaic(object: &InMemDicomObject) -> Option<f64> {
    let element = private_element(object, 0x0019, "SIEMENS MR HEADER", 0x0A)?;
    if element.vr() != VR::UN {
        return element.to_float64().ok();
    }
    // Implicit VR files leave private elements unknown (UN): the bytes are a little-endian u16.
    let bytes = element.to_bytes().ok()?;
    Some(f64::from(u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?])))
}

/// B_value (0019,xx0C), VR IS, in s/mm².
pub fn b_value(object: &InMemDicomObject) -> Option<f64> {
    let element = private_element(object, 0x0019, "SIEMENS MR HEADER", 0x0C)?;
    let value = if element.vr() == VR::UN {
        text(&element.to_bytes().ok()?).parse().ok()?
    } else {
        element.to_float64().ok()?
    };
    value.is_finite().then_some(value)
}

/// DiffusionGradientDirection (0019,xx0E), VR FD, LPS.
pub fn gradient_direction(object: &InMemDicomObject) -> Option<[f64; 3]> {
    let element = private_element(object, 0x0019, "SIEMENS MR HEADER", 0x0E)?;
    let values: Vec<f64> = if element.vr() == VR::UN {
        let bytes = element.to_bytes().ok()?;
        bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    } else {
        element.to_multi_float64().ok()?
    };
    let direction: [f64; 3] = values.try_into().ok()?;
    direction.iter().all(|v| v.is_finite()).then_some(direction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, items: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut field = name.as_bytes().to_vec();
        field.resize(64, 0);
        out.extend(field);
        out.extend(1i32.to_le_bytes());
        out.extend(b"DS\0\0");
        out.extend(3i32.to_le_bytes());
        out.extend((items.len() as i32).to_le_bytes());
        out.extend(77i32.to_le_bytes());
        for item in items {
            let length = item.len() as i32 + 1;
            for l in [length, length, 77, length] {
                out.extend(l.to_le_bytes());
            }
            let mut data = item.as_bytes().to_vec();
            data.push(0);
            data.resize(data.len().div_ceil(4) * 4, 0);
            out.extend(data);
        }
        out
    }

    #[test]
    fn parse_reads_items_with_padding() {
        let mut bytes = b"SV10\x04\x03\x02\x01".to_vec();
        bytes.extend(2u32.to_le_bytes());
        bytes.extend(77u32.to_le_bytes());
        bytes.extend(tag("NumberOfImagesInMosaic", &["48"]));
        bytes.extend(tag("SliceNormalVector", &["0.0", "0.5", "0.866"]));
        let header = parse(&bytes).unwrap();
        assert_eq!(header.number("NumberOfImagesInMosaic"), Some(48.0));
        assert_eq!(header.numbers("SliceNormalVector"), Some(vec![0.0, 0.5, 0.866]));
    }

    #[test]
    fn parse_rejects_truncated_header() {
        let mut bytes = b"SV10\x04\x03\x02\x01".to_vec();
        bytes.extend(1u32.to_le_bytes());
        bytes.extend(77u32.to_le_bytes());
        bytes.extend(&tag("B_value", &["1000"])[..70]);
        assert!(parse(&bytes).unwrap_err().contains("truncated"));
    }
}
