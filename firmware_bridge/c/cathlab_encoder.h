/*
 * cathlab-edge serial protocol v1: encoder for device firmware (C99).
 *
 * Builds every device-to-appliance message as complete wire bytes
 * (0x00, COBS(header | payload | crc16-LE), 0x00) into a caller's buffer,
 * and decodes the appliance's ACK and TIME_REQ byte by byte.
 * No malloc, no libc beyond <stdint.h> and <string.h>; no global state.
 * The protocol document is docs/serial-protocol.md; vectors.txt holds test vectors.
 */
#ifndef CATHLAB_ENCODER_H
#define CATHLAB_ENCODER_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CE_PROTOCOL_VERSION 1u
#define CE_HEADER_LEN 8u
#define CE_MAX_PACKET 254u      /* header + payload + crc, before COBS */
#define CE_MAX_ENCODED 255u     /* COBS of the largest packet: one byte more */
#define CE_MAX_FRAME 257u       /* a leading 0x00, the COBS bytes, the 0x00 delimiter */
#define CE_TEXT_FIELD_LEN 16u   /* model, serial_no */
#define CE_FAULT_TEXT_MAX 64u

enum ce_type {
    CE_HELLO = 0x01, CE_HEARTBEAT = 0x02, CE_TIME_RESP = 0x03,
    CE_STATE = 0x10, CE_SAMPLE = 0x11, CE_SUMMARY = 0x12,
    CE_XRAY = 0x20, CE_FAULT = 0x30,
    CE_ACK = 0x80, CE_TIME_REQ = 0x81
};

enum ce_state {
    CE_IDLE = 0, CE_ARMED = 1, CE_INJECTING = 2, CE_HOLD = 3,
    CE_COMPLETE = 4, CE_ABORTED = 5, CE_STATE_FAULT = 6
};

enum ce_capability { CE_CAP_SAMPLES = 0x01, CE_CAP_XRAY = 0x02, CE_CAP_TIME_SYNC = 0x04 };

typedef struct {
    uint16_t vendor_id;
    uint16_t product_id;
    const char *model;      /* UTF-8, NUL-terminated, at most 16 bytes */
    const char *serial_no;  /* UTF-8, NUL-terminated, at most 16 bytes */
    uint8_t fw_major;
    uint8_t fw_minor;
    uint16_t fw_patch;
    uint8_t protocol_version; /* CE_PROTOCOL_VERSION */
    uint8_t capabilities;     /* enum ce_capability bits */
} ce_hello;

typedef struct {
    uint32_t programmed_volume; /* 0.01 ml */
    uint32_t delivered_volume;  /* 0.01 ml */
    uint16_t programmed_flow;   /* 0.01 ml/s */
    uint16_t peak_flow;         /* 0.01 ml/s */
    uint16_t peak_pressure;     /* kPa */
    uint16_t pressure_limit;    /* kPa */
    uint32_t duration_ms;
    uint16_t rise_ms;
    int32_t xray_delay_ms;      /* X-ray on minus injection start; negative: X-ray first */
} ce_summary;

/*
 * Frame builders. Each writes one complete frame to out, a 0x00 before and the
 * 0x00 delimiter after it (a leading 0x00 ends any line noise before the frame, so
 * the noise cannot cost the frame: docs/serial-protocol.md section 2), and returns its length, or 0 when out_size is too small or an argument is invalid
 * (text too long, state/severity/on out of range). CE_MAX_FRAME bytes always suffice.
 * seq: +1 (mod 65536) for every new packet; a retransmission reuses the frame as is.
 */
size_t ce_hello_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, const ce_hello *m);
size_t ce_heartbeat_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint8_t state);
size_t ce_time_resp_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint32_t token);
size_t ce_state_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint8_t state, uint8_t phase);
size_t ce_sample_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms,
                       uint16_t flow, uint32_t volume, uint16_t pressure, uint8_t phase);
size_t ce_summary_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, const ce_summary *m);
size_t ce_xray_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms, uint8_t on);
size_t ce_fault_frame(uint8_t *out, size_t out_size, uint16_t seq, uint32_t device_ms,
                      uint16_t code, uint8_t severity, const char *text);

/* Lower level: any type with a ready payload; CRC-16/CCITT-FALSE ("123456789" -> 0x29B1). */
size_t ce_frame(uint8_t *out, size_t out_size, uint8_t type, uint16_t seq, uint32_t device_ms,
                const uint8_t *payload, size_t payload_len);
uint16_t ce_crc16(const uint8_t *data, size_t len);

/* Decoder for the appliance's packets (ACK, TIME_REQ); feed every received byte. */
typedef struct {
    uint8_t buf[CE_MAX_ENCODED];
    uint16_t n;
    uint8_t overflow;
} ce_decoder;

typedef struct {
    uint8_t type;       /* CE_ACK or CE_TIME_REQ */
    uint16_t seq;       /* the appliance's own seq */
    uint32_t device_ms; /* the appliance's clock, ms */
    uint16_t acked_seq; /* CE_ACK: seq of the HELLO / SUMMARY / FAULT acknowledged */
    uint32_t token;     /* CE_TIME_REQ: echo it in TIME_RESP */
} ce_host_msg;

enum ce_result {
    CE_NEED_MORE = 0, CE_MESSAGE = 1,
    CE_ERR_FRAMING = -1,  /* not valid COBS, too short or too long */
    CE_ERR_CRC = -2,
    CE_ERR_VERSION = -3,  /* newer protocol version: skip */
    CE_ERR_TYPE = -4,     /* not ACK / TIME_REQ: skip */
    CE_ERR_LENGTH = -5
};

void ce_decoder_init(ce_decoder *d);
/* Returns CE_MESSAGE with *out filled when byte completes a valid packet, CE_NEED_MORE, or a CE_ERR_*. */
int ce_decoder_feed(ce_decoder *d, uint8_t byte, ce_host_msg *out);

#ifdef __cplusplus
}
#endif
#endif /* CATHLAB_ENCODER_H */
