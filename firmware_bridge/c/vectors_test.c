/*
 * Checks cathlab_encoder.c against vectors.txt: every device message must encode to the expected frame
 * byte for byte; every ACK / TIME_REQ frame must decode (whole, and after garbage) to its fields.
 * Usage: vectors_test vectors.txt   (prints "ok NAME" per vector; exit 0 only if all pass)
 * Build: cc -std=c99 -Wall -Wextra -pedantic -o vectors_test vectors_test.c cathlab_encoder.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cathlab_encoder.h"

#define MAX_TOKENS 32

static char *tokens[MAX_TOKENS];
static int ntokens;

static const char *field(const char *key)
{
    size_t k = strlen(key);
    int i;
    for (i = 4; i < ntokens; i++)
        if (strncmp(tokens[i], key, k) == 0 && tokens[i][k] == '=')
            return tokens[i] + k + 1;
    fprintf(stderr, "vector %s: missing field %s\n", tokens[0], key);
    exit(2);
}

static long long num(const char *key) { return strtoll(field(key), NULL, 10); }

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        out[n++] = (uint8_t)(hexval(s[0]) * 16 + hexval(s[1]));
        s += 2;
    }
    return n;
}

/* Text value: a literal token or x:HEX of its UTF-8 bytes; returned NUL-terminated in buf. */
static const char *text(const char *key, char *buf, size_t cap)
{
    const char *v = field(key);
    if (strncmp(v, "x:", 2) == 0) {
        size_t n = unhex(v + 2, (uint8_t *)buf, cap - 1);
        buf[n] = 0;
    } else {
        strncpy(buf, v, cap - 1);
        buf[cap - 1] = 0;
    }
    return buf;
}

static void hexprint(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) printf("%02x", p[i]);
}

static int check_decode(const char *name, const uint8_t *frame, size_t n, int type)
{
    ce_decoder d;
    ce_host_msg m;
    size_t i;
    int r = CE_NEED_MORE, pass;
    static const uint8_t garbage[] = {0x13, 0x37, 0xFF, 0x02, 0x00}; /* a broken frame, then its delimiter */
    ce_decoder_init(&d);
    for (pass = 0; pass < 2; pass++) {
        if (pass == 1) /* the same frame after garbage and a delimiter must still decode */
            for (i = 0; i < sizeof garbage; i++) (void)ce_decoder_feed(&d, garbage[i], &m);
        for (i = 0; i < n; i++) {
            r = ce_decoder_feed(&d, frame[i], &m);
            if (r != CE_NEED_MORE && i + 1 < n) {
                printf("FAIL %s: decoder returned %d before the delimiter\n", name, r);
                return 0;
            }
        }
        if (r != CE_MESSAGE || m.type != type || m.seq != (uint16_t)atol(tokens[2])
            || m.device_ms != (uint32_t)strtoul(tokens[3], NULL, 10)) {
            printf("FAIL %s: decode result %d type %u seq %u\n", name, r, m.type, m.seq);
            return 0;
        }
        if ((type == CE_ACK && m.acked_seq != (uint16_t)num("acked_seq"))
            || (type == CE_TIME_REQ && m.token != (uint32_t)num("token"))) {
            printf("FAIL %s: decoded field differs\n", name);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    char line[2048], t1[80], t2[80];
    uint8_t out[CE_MAX_FRAME], expect[CE_MAX_FRAME];
    FILE *f;
    int failures = 0, count = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: %s vectors.txt\n", argv[0]);
        return 2;
    }
    f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    /* Sanity of the building blocks first. */
    if (ce_crc16((const uint8_t *)"123456789", 9) != 0x29B1) {
        printf("FAIL crc16 check value\n");
        failures++;
    }
    while (fgets(line, sizeof line, f)) {
        char *p, *type;
        uint16_t seq;
        uint32_t ms;
        size_t n = 0, en;
        if (line[0] == '#' || line[0] == '\n') continue;
        ntokens = 0;
        for (p = strtok(line, " \n"); p && ntokens < MAX_TOKENS; p = strtok(NULL, " \n")) tokens[ntokens++] = p;
        if (ntokens < 5) continue;
        type = tokens[1];
        seq = (uint16_t)atol(tokens[2]);
        ms = (uint32_t)strtoul(tokens[3], NULL, 10);
        en = unhex(field("expect"), expect, sizeof expect);
        count++;
        if (strcmp(type, "HELLO") == 0) {
            ce_hello h;
            h.vendor_id = (uint16_t)num("vendor_id");
            h.product_id = (uint16_t)num("product_id");
            h.model = text("model", t1, sizeof t1);
            h.serial_no = text("serial_no", t2, sizeof t2);
            h.fw_major = (uint8_t)num("fw_major");
            h.fw_minor = (uint8_t)num("fw_minor");
            h.fw_patch = (uint16_t)num("fw_patch");
            h.protocol_version = (uint8_t)num("protocol_version");
            h.capabilities = (uint8_t)num("capabilities");
            n = ce_hello_frame(out, sizeof out, seq, ms, &h);
        } else if (strcmp(type, "HEARTBEAT") == 0) {
            n = ce_heartbeat_frame(out, sizeof out, seq, ms, (uint8_t)num("state"));
        } else if (strcmp(type, "TIME_RESP") == 0) {
            n = ce_time_resp_frame(out, sizeof out, seq, ms, (uint32_t)num("token"));
        } else if (strcmp(type, "STATE") == 0) {
            n = ce_state_frame(out, sizeof out, seq, ms, (uint8_t)num("state"), (uint8_t)num("phase"));
        } else if (strcmp(type, "SAMPLE") == 0) {
            n = ce_sample_frame(out, sizeof out, seq, ms, (uint16_t)num("flow"), (uint32_t)num("volume"),
                                (uint16_t)num("pressure"), (uint8_t)num("phase"));
        } else if (strcmp(type, "SUMMARY") == 0) {
            ce_summary s;
            s.programmed_volume = (uint32_t)num("programmed_volume");
            s.delivered_volume = (uint32_t)num("delivered_volume");
            s.programmed_flow = (uint16_t)num("programmed_flow");
            s.peak_flow = (uint16_t)num("peak_flow");
            s.peak_pressure = (uint16_t)num("peak_pressure");
            s.pressure_limit = (uint16_t)num("pressure_limit");
            s.duration_ms = (uint32_t)num("duration_ms");
            s.rise_ms = (uint16_t)num("rise_ms");
            s.xray_delay_ms = (int32_t)num("xray_delay_ms");
            n = ce_summary_frame(out, sizeof out, seq, ms, &s);
        } else if (strcmp(type, "XRAY") == 0) {
            n = ce_xray_frame(out, sizeof out, seq, ms, (uint8_t)num("on"));
        } else if (strcmp(type, "FAULT") == 0) {
            char t3[CE_FAULT_TEXT_MAX + 1];
            n = ce_fault_frame(out, sizeof out, seq, ms, (uint16_t)num("code"), (uint8_t)num("severity"),
                               text("text", t3, sizeof t3));
        } else if (strcmp(type, "ACK") == 0 || strcmp(type, "TIME_REQ") == 0) {
            int t = strcmp(type, "ACK") == 0 ? CE_ACK : CE_TIME_REQ;
            if (check_decode(tokens[0], expect, en, t)) printf("ok %s\n", tokens[0]);
            else failures++;
            continue;
        } else {
            printf("FAIL %s: unknown type %s\n", tokens[0], type);
            failures++;
            continue;
        }
        if (n != en || memcmp(out, expect, n) != 0) {
            printf("FAIL %s: got ", tokens[0]);
            hexprint(out, n);
            printf("\n");
            failures++;
        } else {
            printf("ok %s\n", tokens[0]);
        }
    }
    fclose(f);
    /* Argument checks: each must be refused (return 0), never overrun. */
    {
        ce_hello h = {1, 2, "this model name is too long", "", 1, 0, 0, 1, 0};
        char long_text[CE_FAULT_TEXT_MAX + 2];
        memset(long_text, 'x', sizeof long_text - 1);
        long_text[sizeof long_text - 1] = 0;
        if (ce_hello_frame(out, sizeof out, 0, 0, &h) || ce_fault_frame(out, sizeof out, 0, 0, 1, 0, long_text)
            || ce_state_frame(out, sizeof out, 0, 0, 7, 0) || ce_xray_frame(out, sizeof out, 0, 0, 2)
            || ce_fault_frame(out, sizeof out, 0, 0, 1, 3, "") || ce_sample_frame(out, 10, 0, 0, 1, 1, 1, 1)
            || ce_xray_frame(out, 13, 0, 0, 1) != 0 || ce_xray_frame(out, 14, 0, 0, 1) != 14) {
            printf("FAIL argument checks\n");
            failures++;
        } else {
            printf("ok argument_checks\n");
        }
    }
    printf("%d vectors, %d failures\n", count, failures);
    return failures ? 1 : 0;
}
