//! What a file is: one content-type detection for every client, so that the
//! same file gets the same type whether the `vault` command or the web app
//! adds it.

/// How many leading bytes [`content_type`] looks at (DICOM's marker ends at
/// byte 132).
pub const SNIFF_LEN: usize = 132;

/// The content type of a file from its first bytes (at least
/// [`SNIFF_LEN`] of them when the file is that long) and its name: magic
/// bytes first (PDF, PNG, JPEG, GIF, WebP, DICOM), then the extension, then,
/// for a name that says nothing (standard input, say), the shape of the
/// bytes: JSON (so a FHIR resource piped in is filed as one), UTF-8 text,
/// or opaque bytes.
pub fn content_type(head: &[u8], file_name: &str) -> &'static str {
    if head.starts_with(b"%PDF-") {
        return "application/pdf";
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return "image/png";
    }
    if head.starts_with(&[0xff, 0xd8, 0xff]) {
        return "image/jpeg";
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return "image/gif";
    }
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        return "image/webp";
    }
    if head.get(128..132) == Some(b"DICM") {
        return "application/dicom";
    }
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => "application/json",
        Some("md") | Some("markdown") => "text/markdown",
        Some("txt") | Some("text") | Some("note") => "text/plain",
        Some("csv") => "text/csv",
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("dcm") => "application/dicom",
        _ => match std::str::from_utf8(head) {
            Ok(text)
                if text
                    .trim_start_matches('\u{feff}')
                    .trim_start()
                    .starts_with('{') =>
            {
                "application/json"
            }
            Ok(_) => "text/plain",
            // A multi-byte character cut at the end of the head is still text.
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => "text/plain",
            Err(_) => "application/octet-stream",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn content_is_recognised_by_magic_bytes_then_extension_then_shape() {
        assert_eq!(content_type(b"%PDF-1.7\n", "x.json"), "application/pdf");
        assert_eq!(content_type(b"\x89PNG\r\n\x1a\n", "-"), "image/png");
        assert_eq!(content_type(b"GIF89a\x01\x00", "scan"), "image/gif");
        assert_eq!(
            content_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ", "x"),
            "image/webp"
        );
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM");
        assert_eq!(content_type(&dicom, "IM0001"), "application/dicom");
        assert_eq!(content_type(b"# note", "a.md"), "text/markdown");
        assert_eq!(content_type(b"a,b\n1,2\n", "lab.CSV"), "text/csv");
        // A FHIR resource piped in has no extension: its shape tells.
        assert_eq!(
            content_type(b"\xef\xbb\xbf  {\"resourceType\": \"Observation\"}", "-"),
            "application/json"
        );
        assert_eq!(content_type(b"Referred to cardiology", "-"), "text/plain");
        assert_eq!(
            content_type("caf\u{e9}".as_bytes().get(..4).unwrap_or_default(), "-"),
            "text/plain"
        );
        assert_eq!(
            content_type(&[0xff, 0xfe, 0x00, 0x81], "-"),
            "application/octet-stream"
        );
    }
}
