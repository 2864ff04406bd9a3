/* The C fan-out's types (server/media/fanout.c); cffi reads this file as its cdef, so it
   holds declarations only. */

typedef int (*vp_protect_fn)(void *ctx, void *rtp, int *len);

struct vp_output {
    /* the copy: header template and payload are built in buf, SRTP protects it there */
    unsigned char *buf;
    int header_len;
    int limit;
    uint32_t ssrc;
    uint8_t first_byte;
    uint8_t second_byte;
    /* the output's sequence and timestamp line; run 0: no current source */
    uint64_t run;
    uint16_t seq_offset;
    uint16_t last_seq;
    uint16_t pending_seq;
    uint32_t ts_offset;
    uint32_t last_ts;
    uint32_t pending_ts;
    double last_time;
    int has_sent;
    uint64_t packets_sent;
    uint64_t bytes_sent;
    /* the egress, usable while *epoch == armed_epoch */
    const uint32_t *epoch;
    uint32_t armed_epoch;
    void *srtp;
    const int *fd;
    unsigned char name[28];
    uint32_t name_len;
};

struct vp_counters {
    uint64_t sent;
    uint64_t dropped;
    uint64_t refused;
};

void vp_set_protect(vp_protect_fn protect);
void vp_read_counters(struct vp_counters *out);
int vp_rewrite(struct vp_output *o, uint64_t run, uint16_t seq, uint32_t ts, int marker,
               const char *payload, int payload_len, double now);
void vp_commit(struct vp_output *o, int payload_len, double now);
int vp_fanout(struct vp_output **outputs, int count, struct vp_output *exclude, uint64_t run,
              uint16_t seq, uint32_t ts, int marker, const char *data, int payload_start,
              int payload_len, double now, int *slow, int *slow_count);
