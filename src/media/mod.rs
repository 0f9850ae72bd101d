//! Everything OpenCV: JPEG encode/decode, capture sources, preview windows.
//! (Being written; see the helper task.)
