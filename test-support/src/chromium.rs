//! Headless Chromium for tests that check a page renders: a screenshot of a local file,
//! decoded into pixels a test can count.
//!
//! The browser is `CHROMIUM` if set, otherwise `chromium`, `chromium-browser`, `google-chrome`
//! or `google-chrome-stable` on `PATH` (Debian's `chromium` package installs
//! `/usr/bin/chromium`). When Chromium is *required* — `CI` or `REQUIRE_CHROMIUM=1` is set, as
//! the README's test command does — a missing browser is a hard failure that says how to install
//! it. Otherwise [`Chromium::find`] returns an error the test can print before skipping.
//!
//! ```no_run
//! use test_support::chromium::{Chromium, parse_color};
//!
//! let chromium = Chromium::find().expect("chromium");
//! let shot = chromium
//!     .screenshot(std::path::Path::new("/tmp/page.html"), 800, 600)
//!     .expect("a screenshot");
//! let green = parse_color("#2e9d5b").unwrap();
//! assert!(shot.count(green, 2) > 0);
//! ```

use std::{
    io::Cursor,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::process::{env_flag, find_binary};

const INSTALL_HINT: &str = "Chromium was not found: install it with \
    `sudo apt-get install -y chromium` (Debian) or set CHROMIUM to the browser's path";

/// The names a Chromium binary goes by, tried in order.
const NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// How long one screenshot may take. A cold start of headless Chromium takes a few seconds on a
/// loaded 2-core machine; a hung browser is killed rather than holding the test run forever.
pub const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether the environment demands a real Chromium (`CI` or `REQUIRE_CHROMIUM=1`).
#[must_use]
pub fn required() -> bool {
    env_flag("CI") || env_flag("REQUIRE_CHROMIUM")
}

/// A headless Chromium.
#[derive(Debug, Clone)]
pub struct Chromium {
    binary: PathBuf,
}

impl Chromium {
    /// `CHROMIUM` if set, otherwise the first Chromium on `PATH` (or in `/usr/bin`).
    ///
    /// # Errors
    /// When no browser is found (and Chromium is not [`required`]), or `CHROMIUM` names no file.
    ///
    /// # Panics
    /// When Chromium is [`required`] and missing.
    pub fn find() -> Result<Self, String> {
        let found = match std::env::var_os("CHROMIUM") {
            Some(path) => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(format!("CHROMIUM={} is not a file", path.display()));
                }
                Some(path)
            }
            None => NAMES
                .iter()
                .find_map(|name| find_binary(name, &[PathBuf::from("/usr/bin")])),
        };
        match found {
            Some(binary) => Ok(Self { binary }),
            None if required() => {
                panic!("{INSTALL_HINT} (Chromium is required: CI or REQUIRE_CHROMIUM is set)")
            }
            None => Err(INSTALL_HINT.to_owned()),
        }
    }

    /// The browser's path.
    #[must_use]
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Loads the local file `page` in a `width` × `height` window (device scale 1, no
    /// scrollbars) and returns the screenshot of the viewport, decoded.
    ///
    /// # Errors
    /// As [`Chromium::screenshot_png`], or a PNG that does not decode.
    pub fn screenshot(&self, page: &Path, width: u32, height: u32) -> Result<Screenshot, String> {
        Screenshot::decode(&self.screenshot_png(page, width, height)?)
    }

    /// The screenshot of [`Chromium::screenshot`] as the PNG the browser wrote (to keep it for a
    /// person to look at).
    ///
    /// The browser runs with a throwaway profile, no sandbox (it cannot start as root, as CI
    /// runs, and the page is a local file the test wrote), no GPU and no background network.
    ///
    /// # Errors
    /// The page cannot be resolved, the browser fails, takes longer than
    /// [`SCREENSHOT_TIMEOUT`], or writes no screenshot.
    pub fn screenshot_png(&self, page: &Path, width: u32, height: u32) -> Result<Vec<u8>, String> {
        let page = page
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", page.display()))?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let shot = dir.path().join("screenshot.png");
        // Into a file, not a pipe: a browser blocked on a full pipe nobody reads would hang.
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("file://{}", page.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let deadline = Instant::now() + SCREENSHOT_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "chromium took longer than {SCREENSHOT_TIMEOUT:?} for a screenshot"
                    ));
                }
                Err(e) => return Err(format!("cannot wait for chromium: {e}")),
            }
        };
        std::fs::read(&shot).map_err(|e| {
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            format!("chromium ({status}) wrote no screenshot ({e}):\n{stderr}")
        })
    }
}

/// A decoded screenshot: RGB pixels, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screenshot {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Screenshot {
    /// Decodes a PNG (any color type and bit depth; alpha is dropped).
    ///
    /// # Errors
    /// Bytes that are not a PNG.
    pub fn decode(png: &[u8]) -> Result<Self, String> {
        let mut decoder = png::Decoder::new(Cursor::new(png));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| format!("not a PNG: {e}"))?;
        let size = reader
            .output_buffer_size()
            .ok_or("the PNG is too large to decode")?;
        let mut buf = vec![0; size];
        let info = reader
            .next_frame(&mut buf)
            .map_err(|e| format!("cannot decode the PNG: {e}"))?;
        let channels = match info.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => return Err("an indexed PNG was not expanded".to_owned()),
        };
        let mut rgb = Vec::with_capacity(info.width as usize * info.height as usize);
        for row in buf[..info.buffer_size()].chunks_exact(info.line_size) {
            for px in row[..info.width as usize * channels].chunks_exact(channels) {
                rgb.push(if channels < 3 {
                    [px[0]; 3]
                } else {
                    [px[0], px[1], px[2]]
                });
            }
        }
        Ok(Self {
            width: info.width,
            height: info.height,
            rgb,
        })
    }

    /// The pixel at (`x`, `y`), `None` outside the image.
    #[must_use]
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.rgb
            .get(y as usize * self.width as usize + x as usize)
            .copied()
    }

    /// Pixels within `tolerance` of `color` on every channel.
    #[must_use]
    pub fn count(&self, color: [u8; 3], tolerance: u8) -> usize {
        self.rgb
            .iter()
            .filter(|px| close(**px, color, tolerance))
            .count()
    }

    /// The rows (top to bottom) holding at least `min` pixels within `tolerance` of `color`.
    #[must_use]
    pub fn rows_with(&self, color: [u8; 3], tolerance: u8, min: usize) -> Vec<u32> {
        (0..self.height)
            .filter(|&y| {
                let row = &self.rgb[y as usize * self.width as usize..][..self.width as usize];
                row.iter()
                    .filter(|px| close(**px, color, tolerance))
                    .count()
                    >= min
            })
            .collect()
    }
}

fn close(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

/// `#rrggbb` as RGB.
#[must_use]
pub fn parse_color(hex: &str) -> Option<[u8; 3]> {
    let hex = hex.strip_prefix('#')?;
    if hex.len() != 6 || !hex.is_ascii() {
        return None;
    }
    let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([channel(0)?, channel(2)?, channel(4)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_parse() {
        assert_eq!(parse_color("#2e9d5b"), Some([0x2e, 0x9d, 0x5b]));
        assert_eq!(parse_color("2e9d5b"), None);
        assert_eq!(parse_color("#2e9d5"), None);
        assert_eq!(parse_color("#zz9d5b"), None);
    }

    #[test]
    fn decodes_what_png_encodes() {
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, 3, 2);
            encoder.set_color(png::ColorType::Rgba);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().unwrap();
            let mut data = Vec::new();
            for i in 0..6u8 {
                data.extend_from_slice(&[i * 40, 7, 200, 255]);
            }
            writer.write_image_data(&data).unwrap();
        }
        let shot = Screenshot::decode(&png).unwrap();
        assert_eq!((shot.width, shot.height), (3, 2));
        assert_eq!(shot.pixel(1, 1), Some([160, 7, 200]));
        assert_eq!(shot.pixel(3, 0), None);
        assert_eq!(shot.count([40, 7, 200], 0), 1);
        assert_eq!(shot.count([40, 7, 200], 40), 3);
        assert_eq!(shot.rows_with([0, 7, 200], 0, 1), [0]);
        assert!(Screenshot::decode(b"not a png").is_err());
    }

    /// A page with a known rectangle: the screenshot has it, in its color, where the page put it.
    #[test]
    fn screenshots_show_the_page() {
        let chromium = match Chromium::find() {
            Ok(c) => c,
            Err(e) if !required() => return eprintln!("skipping: {e}"),
            Err(e) => panic!("{e}"),
        };
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page.html");
        std::fs::write(
            &page,
            "<!DOCTYPE html><html><body style=\"margin:0;background:#fff\">\
             <svg width=\"200\" height=\"100\"><rect x=\"20\" y=\"10\" width=\"50\" height=\"30\" \
             fill=\"#2e9d5b\"/></svg></body></html>",
        )
        .unwrap();
        let shot = chromium.screenshot(&page, 320, 200).unwrap();
        assert_eq!((shot.width, shot.height), (320, 200));
        let green = parse_color("#2e9d5b").unwrap();
        assert_eq!(shot.count(green, 0), 50 * 30);
        assert_eq!(shot.pixel(20, 10), Some(green));
        assert_eq!(shot.pixel(19, 10), Some([255, 255, 255]));
        assert_eq!(shot.rows_with(green, 0, 50), (10..40).collect::<Vec<_>>());
    }
}
