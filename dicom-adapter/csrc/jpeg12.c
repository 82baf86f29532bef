/* 12-bit lossy JPEG (DICOM JPEG Extended, process 2 and 4) through GDCM's IJG build with
 * BITS_IN_JSAMPLE 12 (libgdcmjpeg12, Debian package libgdcm-dev): the pure-Rust JPEG decoder
 * reads only 8-bit DCT data. Errors never exit the process: the error manager jumps back here
 * and the message is handed to Rust. Nothing is printed. */

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

/* The installed jconfig.h is GDCM's template (#undef for everything); jpegcmake.h holds the
 * configuration the library was built with, so it is read after and jconfig.h is not read
 * again by jpeglib.h. */
#include "jconfig.h"
#include "jpegcmake.h"
#define JCONFIG_INCLUDED
#include "jpeglib.h"

struct diptych_error {
  struct jpeg_error_mgr mgr;
  jmp_buf jump;
  char *message;
  size_t message_len;
};

static void diptych_error_exit(j_common_ptr cinfo) {
  struct diptych_error *err = (struct diptych_error *)cinfo->err;
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  if (err->message_len > 0) {
    strncpy(err->message, text, err->message_len - 1);
    err->message[err->message_len - 1] = '\0';
  }
  longjmp(err->jump, 1);
}

static void diptych_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void diptych_init_source(j_decompress_ptr cinfo) { (void)cinfo; }

static const JOCTET diptych_eoi[2] = {0xFF, JPEG_EOI};

/* Past the end of the fragment: an end-of-image marker, as libjpeg's own memory source does. */
static boolean diptych_fill_input_buffer(j_decompress_ptr cinfo) {
  cinfo->src->next_input_byte = diptych_eoi;
  cinfo->src->bytes_in_buffer = 2;
  return TRUE;
}

static void diptych_skip_input_data(j_decompress_ptr cinfo, long count) {
  struct jpeg_source_mgr *src = cinfo->src;
  if (count <= 0) return;
  if ((size_t)count > src->bytes_in_buffer) {
    diptych_fill_input_buffer(cinfo);
  } else {
    src->next_input_byte += count;
    src->bytes_in_buffer -= (size_t)count;
  }
}

static void diptych_term_source(j_decompress_ptr cinfo) { (void)cinfo; }

/* Decodes one JPEG codestream of `len` bytes into at most `capacity` 16-bit samples (interleaved
 * when there are several components; three components come out as RGB). Returns 0 and the
 * size, or 1 with `message` set. */
int diptych_jpeg12_decode(const unsigned char *data, size_t len, unsigned short *out,
                          size_t capacity, unsigned *width, unsigned *height,
                          unsigned *components, unsigned *precision, char *message,
                          size_t message_len) {
  struct jpeg_decompress_struct cinfo;
  struct diptych_error err;
  struct jpeg_source_mgr src;
  volatile int created = 0;

  memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = diptych_error_exit;
  err.mgr.output_message = diptych_output_message;
  err.message = message;
  err.message_len = message_len;
  if (setjmp(err.jump)) {
    if (created) jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  created = 1;
  src.next_input_byte = data;
  src.bytes_in_buffer = len;
  src.init_source = diptych_init_source;
  src.fill_input_buffer = diptych_fill_input_buffer;
  src.skip_input_data = diptych_skip_input_data;
  src.resync_to_restart = jpeg_resync_to_restart;
  src.term_source = diptych_term_source;
  cinfo.src = &src;
  jpeg_read_header(&cinfo, TRUE);
  *precision = (unsigned)cinfo.data_precision;
  jpeg_start_decompress(&cinfo);
  *width = cinfo.output_width;
  *height = cinfo.output_height;
  *components = (unsigned)cinfo.output_components;
  size_t row_len = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
  if (row_len == 0 || (size_t)cinfo.output_height > capacity / row_len) {
    snprintf(message, message_len, "the codestream declares %ux%u pixels of %d components, more than the %zu samples expected",
             cinfo.output_width, cinfo.output_height, cinfo.output_components, capacity);
    jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  JSAMPARRAY row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, (JDIMENSION)row_len, 1);
  while (cinfo.output_scanline < cinfo.output_height) {
    size_t line = cinfo.output_scanline;
    if (jpeg_read_scanlines(&cinfo, row, 1) != 1) break;
    for (size_t i = 0; i < row_len; i++) out[line * row_len + i] = (unsigned short)row[0][i];
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return 0;
}
