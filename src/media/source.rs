//! Where the camera client's frames come from.
//!
//! The client streams whatever a [`FrameSource`] yields, so a machine without a camera can
//! still be tested end to end: a real camera ([`CameraSource`]), a video file
//! ([`VideoFileSource`]), still images looped forever ([`ImageSource`]), or a synthetic,
//! always-changing test pattern ([`PatternSource`]) that shows at a glance whether frames
//! arrive live and in order. Sources only produce frames; pacing and encoding are the
//! caller's business.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use opencv::core::{Mat, Point, Rect, Scalar, Size, CV_8UC3};
use opencv::imgcodecs;
use opencv::imgproc;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

use super::{check_size, MediaError, Result};

/// A sequence of BGR frames.
pub trait FrameSource: Send {
    /// The next frame, or `None` once the source has ended (only finite sources end).
    fn next_frame(&mut self) -> Result<Option<Mat>>;
    /// One line for logs, e.g. `camera 0 (640x480)`.
    fn describe(&self) -> String;
}

/// Returns `frame` at `width` x `height`: the frame itself, not a copy, when it already has
/// that size (a live source at the configured size, the usual case, costs nothing), else
/// [`resize_to`] it.
pub fn into_size(frame: Mat, width: i32, height: i32) -> Result<Mat> {
    if !frame.empty() && (frame.cols(), frame.rows()) == (width, height) {
        return Ok(frame);
    }
    resize_to(&frame, width, height)
}

/// Returns `frame` scaled to `width` x `height` (a plain copy when it already has that size).
pub fn resize_to(frame: &Mat, width: i32, height: i32) -> Result<Mat> {
    check_size("resize_to", width, height)?;
    if frame.empty() {
        return Err(MediaError::InvalidInput(
            "cannot resize an empty frame".into(),
        ));
    }
    if frame.cols() == width && frame.rows() == height {
        return Ok(frame.try_clone()?);
    }
    let shrinking = width < frame.cols() || height < frame.rows();
    let interpolation = if shrinking {
        imgproc::INTER_AREA
    } else {
        imgproc::INTER_LINEAR
    };
    let mut out = Mat::default();
    imgproc::resize(
        frame,
        &mut out,
        Size::new(width, height),
        0.0,
        0.0,
        interpolation,
    )?;
    Ok(out)
}

/// Reads `capture` into a new Mat; `None` when it yields no frame.
fn read_frame(capture: &mut VideoCapture) -> Result<Option<Mat>> {
    let mut frame = Mat::default();
    if !capture.read(&mut frame)? || frame.empty() {
        return Ok(None);
    }
    Ok(Some(frame))
}

/// A camera opened by index through OpenCV's `VideoCapture`.
pub struct CameraSource {
    index: i32,
    capture: VideoCapture,
    requested: (i32, i32),
}

impl CameraSource {
    /// Opens camera `index` and asks it for `width` x `height` frames. The camera may pick
    /// another size; [`describe`](FrameSource::describe) shows the one it chose, and
    /// [`resize_to`] fixes it when the size matters.
    pub fn open(index: i32, width: i32, height: i32) -> Result<Self> {
        check_size("camera frame", width, height)?;
        let unavailable = |detail: String| MediaError::CameraUnavailable { index, detail };
        let mut capture = VideoCapture::new(index, videoio::CAP_ANY)
            .map_err(|e| unavailable(e.message.clone()))?;
        if !capture.is_opened().map_err(|e| unavailable(e.message))? {
            return Err(unavailable(String::new()));
        }
        // A camera that ignores these still streams at its own size, so failures are fine.
        let _ = capture.set(videoio::CAP_PROP_FRAME_WIDTH, f64::from(width));
        let _ = capture.set(videoio::CAP_PROP_FRAME_HEIGHT, f64::from(height));
        Ok(CameraSource {
            index,
            capture,
            requested: (width, height),
        })
    }
}

impl FrameSource for CameraSource {
    /// A camera never ends: a failed read is an error (unplugged, or taken by another program).
    fn next_frame(&mut self) -> Result<Option<Mat>> {
        match read_frame(&mut self.capture)? {
            Some(frame) => Ok(Some(frame)),
            None => Err(MediaError::CameraUnavailable {
                index: self.index,
                detail: "it stopped delivering frames".into(),
            }),
        }
    }

    fn describe(&self) -> String {
        let w = self
            .capture
            .get(videoio::CAP_PROP_FRAME_WIDTH)
            .unwrap_or(0.0);
        let h = self
            .capture
            .get(videoio::CAP_PROP_FRAME_HEIGHT)
            .unwrap_or(0.0);
        format!(
            "camera {} ({w}x{h}, asked for {}x{})",
            self.index, self.requested.0, self.requested.1
        )
    }
}

/// A video file, read once from start to end.
pub struct VideoFileSource {
    path: PathBuf,
    capture: VideoCapture,
}

impl VideoFileSource {
    /// Opens the video at `path` (any container/codec this OpenCV build reads).
    pub fn open(path: &Path) -> Result<Self> {
        let cannot = |reason: String| MediaError::CannotOpen {
            path: path.to_owned(),
            reason,
        };
        if !path.is_file() {
            return Err(cannot("no such file".into()));
        }
        let capture = VideoCapture::from_file(path, videoio::CAP_ANY)
            .map_err(|e| cannot(format!("OpenCV failed: {}", e.message)))?;
        if !capture.is_opened()? {
            return Err(cannot(
                "not a video this OpenCV build can read (try an MJPG .avi)".into(),
            ));
        }
        Ok(VideoFileSource {
            path: path.to_owned(),
            capture,
        })
    }
}

impl FrameSource for VideoFileSource {
    /// `None` at the end of the file.
    fn next_frame(&mut self) -> Result<Option<Mat>> {
        read_frame(&mut self.capture)
    }

    fn describe(&self) -> String {
        let get = |prop| self.capture.get(prop).unwrap_or(0.0);
        format!(
            "video file {} ({}x{}, {} frames at {} fps)",
            self.path.display(),
            get(videoio::CAP_PROP_FRAME_WIDTH),
            get(videoio::CAP_PROP_FRAME_HEIGHT),
            get(videoio::CAP_PROP_FRAME_COUNT),
            get(videoio::CAP_PROP_FPS),
        )
    }
}

/// Still images looped forever: one image file, or every image in a folder.
pub struct ImageSource {
    path: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    /// The decoded image when there is exactly one, so it is not re-read every frame.
    single: Option<Mat>,
}

/// File extensions [`ImageSource`] picks up from a folder (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Reads an image file as BGR; `None` if OpenCV cannot read it.
fn read_image(path: &Path) -> Option<Mat> {
    imgcodecs::imread(path, imgcodecs::IMREAD_COLOR)
        .ok()
        .filter(|m| !m.empty())
}

impl ImageSource {
    /// Opens an image file, or a folder whose jpg/jpeg/png/bmp files are shown in name
    /// order. Files that cannot be decoded are skipped; none decodable is an error.
    pub fn open(path: &Path) -> Result<Self> {
        let cannot = |reason: String| MediaError::CannotOpen {
            path: path.to_owned(),
            reason,
        };
        let mut files = if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| cannot(e.to_string()))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_image_file(p))
                .collect();
            files.sort();
            files
        } else if path.is_file() {
            vec![path.to_owned()]
        } else {
            return Err(cannot("no such file or folder".into()));
        };
        // Keep only files that decode, so next_frame can't find an empty list later on
        // (unless files are deleted meanwhile).
        files.retain(|p| read_image(p).is_some());
        if files.is_empty() {
            return Err(cannot(format!(
                "no readable image (looked for {})",
                IMAGE_EXTENSIONS.join("/")
            )));
        }
        let single = if files.len() == 1 {
            read_image(&files[0])
        } else {
            None
        };
        Ok(ImageSource {
            path: path.to_owned(),
            files,
            next: 0,
            single,
        })
    }
}

impl FrameSource for ImageSource {
    /// Never `None`: after the last image comes the first again.
    fn next_frame(&mut self) -> Result<Option<Mat>> {
        if let Some(frame) = &self.single {
            return Ok(Some(frame.try_clone()?));
        }
        // Files that stopped being readable since open() are dropped from the loop.
        while !self.files.is_empty() {
            let i = self.next % self.files.len();
            if let Some(frame) = read_image(&self.files[i]) {
                self.next = (i + 1) % self.files.len();
                return Ok(Some(frame));
            }
            self.files.remove(i);
            self.next = i;
        }
        Err(MediaError::CannotOpen {
            path: self.path.clone(),
            reason: "none of its images can be read any more".into(),
        })
    }

    fn describe(&self) -> String {
        if self.path.is_dir() {
            format!(
                "image folder {} ({} images, looped)",
                self.path.display(),
                self.files.len()
            )
        } else {
            format!("image {} (looped)", self.path.display())
        }
    }
}

/// A synthetic test pattern: colour bars, a bouncing ball, a progress bar, the frame number
/// and the wall-clock time. Every frame differs from the one before. Never ends.
pub struct PatternSource {
    width: i32,
    height: i32,
    frame: u64,
    /// Shown instead of the wall-clock time, so the frames are the same on every run.
    fixed_clock: Option<String>,
    /// Amplitude of the uniform noise added to every frame ([`add_noise`]); 0: none.
    noise: u8,
}

impl PatternSource {
    /// A pattern of `width` x `height` frames (an invalid size errors on the first frame).
    pub fn new(width: i32, height: i32) -> Self {
        PatternSource {
            width,
            height,
            frame: 0,
            fixed_clock: None,
            noise: 0,
        }
    }

    /// The same pattern with fresh uniform noise of `amplitude` (0..=255) added to every
    /// frame, as a camera sensor would: a live source whose JPEG size depends on quality
    /// and size as a camera's does (the plain pattern compresses to a third of that).
    /// 0 is the plain pattern.
    pub fn with_noise(mut self, amplitude: u8) -> Self {
        self.noise = amplitude;
        self
    }

    /// The same pattern with `text` in place of the clock: every run draws the very same
    /// frames (for tests whose outcome must not depend on the time they run at).
    pub fn with_fixed_clock(mut self, text: &str) -> Self {
        self.fixed_clock = Some(text.to_owned());
        self
    }

    /// How many frames have been produced so far (the next frame shows this number).
    pub fn frames_produced(&self) -> u64 {
        self.frame
    }

    fn draw(&self) -> Result<Mat> {
        let (w, h, n) = (self.width, self.height, self.frame);
        let mut img = Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(0.0))?;

        // Colour bars (BGR, 75% intensity): white, yellow, cyan, green, magenta, red, blue.
        const BARS: [(f64, f64, f64); 7] = [
            (191., 191., 191.),
            (0., 191., 191.),
            (191., 191., 0.),
            (0., 191., 0.),
            (191., 0., 191.),
            (0., 0., 191.),
            (191., 0., 0.),
        ];
        let count = BARS.len() as i32;
        for (i, &(b, g, r)) in (0..).zip(BARS.iter()) {
            let x0 = w * i / count;
            let x1 = w * (i + 1) / count;
            let rect = Rect::new(x0, 0, (x1 - x0).max(1), h);
            imgproc::rectangle(
                &mut img,
                rect,
                Scalar::new(b, g, r, 0.),
                imgproc::FILLED,
                imgproc::LINE_8,
                0,
            )?;
        }

        // A ball bouncing off the edges (triangle waves at two speeds).
        let radius = (w.min(h) / 10).max(2);
        let bounce = |pos: u64, span: i32| -> i32 {
            let span = u64::try_from(span.max(1)).unwrap_or(1);
            let p = pos % (2 * span);
            // p < 2*span, and span came from an i32, so this fits.
            (if p < span { p } else { 2 * span - p }) as i32
        };
        let center = Point::new(
            radius + bounce(n * 7, w - 2 * radius),
            radius + bounce(n * 5, h - 2 * radius),
        );
        imgproc::circle(
            &mut img,
            center,
            radius,
            Scalar::new(0., 140., 255., 0.),
            imgproc::FILLED,
            imgproc::LINE_AA,
            0,
        )?;
        imgproc::circle(
            &mut img,
            center,
            radius,
            Scalar::all(20.),
            (radius / 8).max(1),
            imgproc::LINE_AA,
            0,
        )?;

        // A bar along the bottom that grows one pixel per frame: consecutive frames differ
        // even when the frame is too small for the text to show.
        let bar_h = (h / 40).max(1);
        let progress = i32::try_from(n % u64::try_from(w).unwrap_or(1)).unwrap_or(0);
        let bar = Rect::new(0, h - bar_h, progress + 1, bar_h);
        imgproc::rectangle(
            &mut img,
            bar,
            Scalar::all(255.),
            imgproc::FILLED,
            imgproc::LINE_8,
            0,
        )?;

        // Frame number and UTC wall-clock time, on a dark box for contrast.
        let scale = f64::from(h) / 480.0;
        let thickness = (h / 240).max(1);
        let line_h = (f64::from(h) / 12.0) as i32;
        let panel = Rect::new(
            0,
            0,
            w.min((scale * 420.0) as i32 + 10),
            (2 * line_h + line_h / 2).min(h),
        );
        imgproc::rectangle(
            &mut img,
            panel,
            Scalar::all(0.),
            imgproc::FILLED,
            imgproc::LINE_8,
            0,
        )?;
        let clock = self.fixed_clock.clone().unwrap_or_else(utc_clock);
        for (row, text) in [(1, format!("frame {n}")), (2, clock)] {
            imgproc::put_text(
                &mut img,
                &text,
                Point::new(line_h / 4, row * line_h),
                imgproc::FONT_HERSHEY_SIMPLEX,
                scale,
                Scalar::all(255.),
                thickness,
                imgproc::LINE_AA,
                false,
            )?;
        }
        Ok(img)
    }
}

/// The current UTC time of day as `HH:MM:SS.mmm UTC`.
fn utc_clock() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since_epoch.subsec_millis()
    )
}

/// `frame` (8-bit, any channels) with uniform noise in `0..amplitude` added to every
/// sample (saturating at 255), drawn from OpenCV's thread RNG: different on every call
/// unless the caller seeds it first (`opencv::core::set_rng_seed`).
pub fn add_noise(frame: &Mat, amplitude: f64) -> Result<Mat> {
    let mut noise =
        Mat::new_rows_cols_with_default(frame.rows(), frame.cols(), frame.typ(), Scalar::all(0.0))?;
    opencv::core::randu(&mut noise, &Scalar::all(0.0), &Scalar::all(amplitude))?;
    let mut noisy = Mat::default();
    opencv::core::add(frame, &noise, &mut noisy, &opencv::core::no_array(), -1)?;
    Ok(noisy)
}

impl FrameSource for PatternSource {
    fn next_frame(&mut self) -> Result<Option<Mat>> {
        check_size("test pattern", self.width, self.height)?;
        let mut frame = self.draw()?;
        if self.noise > 0 {
            frame = add_noise(&frame, f64::from(self.noise))?;
        }
        self.frame += 1;
        Ok(Some(frame))
    }

    fn describe(&self) -> String {
        match self.noise {
            0 => format!("test pattern ({}x{})", self.width, self.height),
            a => format!("test pattern ({}x{}, noise {a})", self.width, self.height),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{jpeg, testvideo};

    fn next(src: &mut dyn FrameSource) -> Mat {
        src.next_frame().unwrap().expect("source ended early")
    }

    fn same_pixels(a: &Mat, b: &Mat) -> bool {
        a.data_bytes().unwrap() == b.data_bytes().unwrap()
    }

    #[test]
    fn pattern_frames_have_the_size_and_all_differ() {
        let mut src = PatternSource::new(320, 240);
        let frames: Vec<Mat> = (0..30).map(|_| next(&mut src)).collect();
        for f in &frames {
            assert_eq!((f.cols(), f.rows(), f.typ()), (320, 240, CV_8UC3));
        }
        for pair in frames.windows(2) {
            assert!(!same_pixels(&pair[0], &pair[1]));
        }
        assert_eq!(src.frames_produced(), 30);
    }

    #[test]
    fn noisy_pattern_frames_differ_and_grow_with_the_amplitude() {
        let size = |amplitude: u8| {
            let mut src = PatternSource::new(640, 480)
                .with_fixed_clock("12:00:00.000 UTC")
                .with_noise(amplitude);
            let a = next(&mut src);
            let b = next(&mut src);
            (a, b, src.describe())
        };
        let (plain, _, _) = size(0);
        let (a, b, what) = size(18);
        assert!(what.contains("noise 18"), "{what}");
        // fresh noise every frame, not the same noise again
        let mut diff = Mat::default();
        opencv::core::absdiff(&a, &b, &mut diff).unwrap();
        let changed = opencv::core::count_non_zero(&diff.reshape(1, 0).unwrap()).unwrap();
        assert!(changed > 640 * 480, "{changed} samples changed");
        let q90 = |m: &Mat| super::super::jpeg::encode(m, 90).unwrap().len();
        let (plain, noisy) = (q90(&plain), q90(&a));
        // the scene of issue 13: about 66.7 kB a frame at q90 (plain: about a third)
        assert!((58_000..78_000).contains(&noisy), "{noisy} bytes");
        assert!(plain * 2 < noisy, "{plain} vs {noisy}");
    }

    #[test]
    fn tiny_pattern_frames_still_differ() {
        let mut src = PatternSource::new(8, 4);
        let a = next(&mut src);
        let b = next(&mut src);
        assert!(!same_pixels(&a, &b));
    }

    #[test]
    fn pattern_with_bad_size_is_an_error() {
        assert!(PatternSource::new(0, 240).next_frame().is_err());
        assert!(PatternSource::new(320, -1).next_frame().is_err());
    }

    #[test]
    fn resize_to_changes_size_or_copies() {
        let frame = next(&mut PatternSource::new(320, 240));
        let small = resize_to(&frame, 160, 90).unwrap();
        assert_eq!((small.cols(), small.rows()), (160, 90));
        let same = resize_to(&frame, 320, 240).unwrap();
        assert!(same_pixels(&frame, &same));
        assert!(resize_to(&frame, 0, 10).is_err());
        assert!(resize_to(&Mat::default(), 10, 10).is_err());
    }

    #[test]
    fn into_size_keeps_a_frame_of_the_size_and_resizes_others() {
        let frame = next(&mut PatternSource::new(320, 240));
        let data = frame.data();
        let same = into_size(frame, 320, 240).unwrap();
        assert_eq!(same.data(), data, "the same pixels, not a copy");
        let small = into_size(same, 160, 90).unwrap();
        assert_eq!((small.cols(), small.rows()), (160, 90));
        assert!(into_size(small, 0, 10).is_err());
        assert!(into_size(Mat::default(), 10, 10).is_err());
    }

    #[test]
    fn video_file_reads_back_every_frame_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.avi");
        testvideo::write_test_video(&path, 12, 160, 120, 10.0).unwrap();
        let mut src = VideoFileSource::open(&path).unwrap();
        for i in 0..12 {
            let f = src
                .next_frame()
                .unwrap()
                .unwrap_or_else(|| panic!("ended at {i}"));
            assert_eq!((f.cols(), f.rows()), (160, 120));
        }
        assert!(src.next_frame().unwrap().is_none());
        assert!(src.next_frame().unwrap().is_none());
        assert!(src.describe().contains("test.avi"));
    }

    #[test]
    fn video_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.avi");
        let err = VideoFileSource::open(&missing).err().unwrap();
        assert!(err.to_string().contains("missing.avi"), "{err}");
        let junk = dir.path().join("junk.avi");
        std::fs::write(&junk, b"not a video").unwrap();
        assert!(VideoFileSource::open(&junk).is_err());
    }

    #[test]
    fn image_folder_loops_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        // a is 64x48 and b is 32x24, so the order can be read off the sizes.
        for (name, w, h) in [("b.jpg", 32, 24), ("a.jpg", 64, 48)] {
            let frame = next(&mut PatternSource::new(w, h));
            std::fs::write(dir.path().join(name), jpeg::encode(&frame, 90).unwrap()).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
        let mut src = ImageSource::open(dir.path()).unwrap();
        let widths: Vec<i32> = (0..3).map(|_| next(&mut src).cols()).collect();
        assert_eq!(widths, [64, 32, 64]);
        assert!(src.describe().contains("2 images"), "{}", src.describe());
    }

    #[test]
    fn single_image_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.JPG");
        let frame = next(&mut PatternSource::new(40, 30));
        std::fs::write(&path, jpeg::encode(&frame, 90).unwrap()).unwrap();
        let mut src = ImageSource::open(&path).unwrap();
        let a = next(&mut src);
        let b = next(&mut src);
        assert_eq!((a.cols(), a.rows()), (40, 30));
        assert!(same_pixels(&a, &b));
    }

    #[test]
    fn image_source_without_images_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ImageSource::open(dir.path()).is_err());
        std::fs::write(dir.path().join("x.jpg"), b"garbage").unwrap();
        let err = ImageSource::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("no readable image"), "{err}");
        assert!(ImageSource::open(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn missing_camera_error_suggests_alternatives() {
        // Most test machines have no camera; if this one has, there is nothing to check.
        crate::media::quiet_opencv_logs().unwrap();
        let err = match CameraSource::open(0, 640, 480) {
            Ok(_) => return,
            Err(e) => e.to_string(),
        };
        assert!(err.contains("camera 0"), "{err}");
        assert!(err.contains("--pattern"), "{err}");
        assert!(err.contains("--video FILE"), "{err}");
    }

    #[test]
    fn sources_are_usable_as_trait_objects_across_threads() {
        let mut src: Box<dyn FrameSource> = Box::new(PatternSource::new(64, 48));
        let frame = std::thread::spawn(move || src.next_frame().unwrap().unwrap())
            .join()
            .unwrap();
        assert_eq!(frame.cols(), 64);
    }
}
