//! Builds the libjpeg-turbo reference timing of `examples/jpeg_walk_speed`
//! (csrc/libjpeg_entropy.c) against the system's libjpeg (Debian: libjpeg62-turbo-dev,
//! which OpenCV's packages already pull in).
fn main() {
    println!("cargo:rerun-if-changed=csrc/libjpeg_entropy.c");
    cc::Build::new()
        .file("csrc/libjpeg_entropy.c")
        .opt_level(2)
        .compile("udphub_libjpeg_entropy");
    println!("cargo:rustc-link-lib=jpeg");
}
