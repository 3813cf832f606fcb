/* cathlab-edge serial protocol v1 encoder; see cathlab_encoder.h. C99, no malloc, no libc beyond string.h. */
#include "cathlab_encoder.h"

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint16_t ce_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFFu;
    size_t i;
    int b;
    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)(data[i] << 8);
        for (b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

/* COBS: a full 254-byte block at the very end gets no extra code byte, so n <= 254 encodes to n + 1. */
static size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t code_at = 0, o = 1, i;
    uint8_t code = 1;
    for (i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            code++;
            if (code == 0xFF && i + 1 < n) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

size_t ce_frame(uint8_t *out, size_t out_size, uint8_t type, uint16_t seq, uint32_t device_ms,
                const uint8_t *payload, size_t payload_len)
{
    uint8_t pkt[CE_MAX_PACKET];
    size_t n = CE_HEADER_LEN + payload_len + 2u, len;
    uint16_t crc;
    if (out == NULL || n > CE_MAX_PACKET || out_size < n + 3u || (payload_len && payload == NULL))
        return 0;
    pkt[0] = CE_PROTOCOL_VERSION;
    pkt[1] = type;
    put16(pkt + 2, seq);
    put32(pkt + 4, device_ms);
    if (payload_len)
        memcpy(pkt + CE_HEADER_LEN, payload, payload_len);
    crc = ce_crc16(pkt, n - 2u);
    put16(pkt + n - 2u, crc);
    out[0] = 0x00; /* ends any noise before the frame */
    len = 1u + cobs_encode(pkt, n, out + 1);
    out[len++] = 0x00;
    return len;
}

/* Copy NUL-terminated text into a fixed NUL-padded field; 0 if it does not fit. */
static int put_text(uint8_t *dst, size_t field, const char *text)
{
    size_t len = text ? strlen(text) : 0;
    if (len > field)
        return 0;
    memset(dst, 0, field);
    if (len)
        memcpy(dst, text, len);
    return 1;
}

size_t ce_hello_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, const ce_hello *m)
{
    uint8_t p[42];
    if (m == NULL)
        return 0;
    put16(p, m->vendor_id);
    put16(p + 2, m->product_id);
    if (!put_text(p + 4, CE_TEXT_FIELD_LEN, m->model) || !put_text(p + 20, CE_TEXT_FIELD_LEN, m->serial_no))
        return 0;
    p[36] = m->fw_major;
    p[37] = m->fw_minor;
    put16(p + 38, m->fw_patch);
    p[40] = m->protocol_version;
    p[41] = m->capabilities;
    return ce_frame(out, out_size, CE_HELLO, seq, device_ms, p, sizeof p);
}

size_t ce_heartbeat_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint8_t state)
{
    if (state > CE_STATE_FAULT)
        return 0;
    return ce_frame(out, out_size, CE_HEARTBEAT, seq, device_ms, &state, 1);
}

size_t ce_time_resp_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint32_t token)
{
    uint8_t p[4];
    put32(p, token);
    return ce_frame(out, out_size, CE_TIME_RESP, seq, device_ms, p, sizeof p);
}

size_t ce_state_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint8_t state, uint8_t phase)
{
    uint8_t p[2];
    if (state > CE_STATE_FAULT)
        return 0;
    p[0] = state;
    p[1] = phase;
    return ce_frame(out, out_size, CE_STATE, seq, device_ms, p, sizeof p);
}

size_t ce_sample_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms,
                       uint16_t flow, uint32_t volume, uint16_t pressure, uint8_t phase)
{
    uint8_t p[9];
    put16(p, flow);
    put32(p + 2, volume);
    put16(p + 6, pressure);
    p[8] = phase;
    return ce_frame(out, out_size, CE_SAMPLE, seq, device_ms, p, sizeof p);
}

size_t ce_summary_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, const ce_summary *m)
{
    uint8_t p[26];
    if (m == NULL)
        return 0;
    put32(p, m->programmed_volume);
    put32(p + 4, m->delivered_volume);
    put16(p + 8, m->programmed_flow);
    put16(p + 10, m->peak_flow);
    put16(p + 12, m->peak_pressure);
    put16(p + 14, m->pressure_limit);
    put32(p + 16, m->duration_ms);
    put16(p + 20, m->rise_ms);
    put32(p + 22, (uint32_t)m->xray_delay_ms); /* two's complement, as every C99 exact-width type */
    return ce_frame(out, out_size, CE_SUMMARY, seq, device_ms, p, sizeof p);
}

size_t ce_xray_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint8_t on)
{
    if (on > 1)
        return 0;
    return ce_frame(out, out_size, CE_XRAY, seq, device_ms, &on, 1);
}

size_t ce_fault_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms,
                      uint16_t code, uint8_t severity, const char *text)
{
    uint8_t p[3 + CE_FAULT_TEXT_MAX];
    size_t len = text ? strlen(text) : 0;
    if (severity > 2 || len > CE_FAULT_TEXT_MAX)
        return 0;
    put16(p, code);
    p[2] = severity;
    if (len)
        memcpy(p + 3, text, len);
    return ce_frame(out, out_size, CE_FAULT, seq, device_ms, p, 3 + len);
}

void ce_decoder_init(ce_decoder *d)
{
    d->n = 0;
    d->overflow = 0;
}

static int decode_frame(const uint8_t *f, size_t n, ce_host_msg *out)
{
    uint8_t pkt[CE_MAX_FRAME];
    size_t i = 0, o = 0;
    while (i < n) {
        uint8_t code = f[i++];
        if (i + code - 1u > n)
            return CE_ERR_FRAMING;
        memcpy(pkt + o, f + i, code - 1u);
        o += code - 1u;
        i += code - 1u;
        if (code < 0xFF && i < n)
            pkt[o++] = 0;
    }
    if (o < CE_HEADER_LEN + 2u)
        return CE_ERR_FRAMING;
    if (ce_crc16(pkt, o - 2u) != get16(pkt + o - 2u))
        return CE_ERR_CRC;
    if (pkt[0] != CE_PROTOCOL_VERSION)
        return CE_ERR_VERSION;
    out->type = pkt[1];
    out->seq = get16(pkt + 2);
    out->device_ms = get32(pkt + 4);
    out->acked_seq = 0;
    out->token = 0;
    if (pkt[1] == CE_ACK) {
        if (o != CE_HEADER_LEN + 2u + 2u)
            return CE_ERR_LENGTH;
        out->acked_seq = get16(pkt + CE_HEADER_LEN);
        return CE_MESSAGE;
    }
    if (pkt[1] == CE_TIME_REQ) {
        if (o != CE_HEADER_LEN + 4u + 2u)
            return CE_ERR_LENGTH;
        out->token = get32(pkt + CE_HEADER_LEN);
        return CE_MESSAGE;
    }
    return CE_ERR_TYPE;
}

int ce_decoder_feed(ce_decoder *d, uint8_t byte, ce_host_msg *out)
{
    size_t n;
    int overflow;
    if (byte != 0) {
        if (d->n < sizeof d->buf)
            d->buf[d->n++] = byte;
        else
            d->overflow = 1; /* keep the buffer bounded; the frame is rejected at its delimiter */
        return CE_NEED_MORE;
    }
    n = d->n;
    overflow = d->overflow;
    d->n = 0;
    d->overflow = 0;
    if (n == 0)
        return CE_NEED_MORE; /* empty frame: padding */
    if (overflow)
        return CE_ERR_FRAMING;
    return decode_frame(d->buf, n, out);
}
