/* The reference the JPEG walk is timed against (examples/jpeg_walk_speed): libjpeg-turbo's
 * own entropy decode of a whole JPEG held in memory, jpeg_read_coefficients (Huffman
 * decoding of every block into coefficient arrays; no dequantisation, no IDCT, no colour
 * conversion). Errors longjmp back here instead of exiting the process. */
#include <setjmp.h>
#include <stdio.h>
#include <jpeglib.h>

struct udphub_error {
    struct jpeg_error_mgr pub;
    jmp_buf back;
};

static void udphub_error_exit(j_common_ptr cinfo) {
    struct udphub_error *err = (struct udphub_error *)cinfo->err;
    longjmp(err->back, 1);
}

static void udphub_quiet(j_common_ptr cinfo, int level) {
    (void)cinfo;
    (void)level;
}

/* 0 when the file decodes, -1 when libjpeg reports an error. */
int udphub_libjpeg_read_coefficients(const unsigned char *data, unsigned long len) {
    struct jpeg_decompress_struct cinfo;
    struct udphub_error err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = udphub_error_exit;
    err.pub.emit_message = udphub_quiet;
    if (setjmp(err.back)) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)data, len);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    if (jpeg_read_coefficients(&cinfo) == NULL) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}
