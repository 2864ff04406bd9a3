/* The fan-out's per-copy work in one C call (server/media/fast_fanout.py loads it).

   For each listener output of a channel: rewrite the header (its SSRC, its sequence and
   timestamp line, the marker), copy the payload behind its header template, SRTP-protect
   in place with the listener's libsrtp context, and queue the copy; every 256 copies, and
   at the end, the queue leaves in one sendmmsg per socket. The rules are forwarder.py's
   ListenerOutput.send, line for line: the Python class stays the fallback and the tests
   hold the two to the same output.

   An output is "armed" while the connection it belongs to has not changed since its
   egress was checked in Python: *epoch still equals armed_epoch (aiortc_hooks bumps the
   epoch on every DTLS state change and every change of the nominated ICE pair). An output
   that is not armed is left to the Python path, its index returned in `slow`. */

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "fanout.h"

#define VP_CLOCK_RATE 48000.0
#define VP_FRAME_SAMPLES 960u
#define VP_LATE_WINDOW 32u
#define VP_JUMP_AHEAD 0x1000u
#define VP_CHUNK 256

/* libsrtp 2's srtp_protect(srtp_t, void *rtp_hdr, int *len_ptr), found at run time in
   pylibsrtp's binding (it links libsrtp in; there is no system library to link). */
static vp_protect_fn vp_protect = NULL;

static struct vp_counters vp_totals;

void vp_set_protect(vp_protect_fn protect)
{
    vp_protect = protect;
}

void vp_read_counters(struct vp_counters *out)
{
    *out = vp_totals;
}

static void vp_rebase(struct vp_output *o, uint64_t run, uint16_t seq, uint32_t ts, double now)
{
    /* A new talker (or the same one after a pause we did not forward): continue the
       sequence right after the last packet and the timestamps by the wall time that
       passed, at least one frame, so the receiver hears silence, not a jump back. */
    uint64_t advance = VP_FRAME_SAMPLES;
    if (o->has_sent) {
        double samples = (now - o->last_time) * VP_CLOCK_RATE;
        if (samples > (double)VP_FRAME_SAMPLES)
            advance = (uint64_t)samples;
    }
    o->seq_offset = (uint16_t)(o->last_seq + 1u - seq);
    o->ts_offset = (uint32_t)((uint64_t)o->last_ts + advance - ts);
    o->run = run;
}

int vp_rewrite(struct vp_output *o, uint64_t run, uint16_t seq, uint32_t ts, int marker,
               const char *payload, int payload_len, double now)
{
    /* Builds the copy in o->buf and returns its length; 0 when this output skips it.
       The new sequence number and timestamp wait in o->pending_* for vp_commit. */
    if (run != o->run)
        vp_rebase(o, run, seq, ts, now);
    uint16_t out_seq = (uint16_t)(seq + o->seq_offset);
    uint16_t step = (uint16_t)(out_seq - o->last_seq);
    if (step == 0)
        return 0; /* the same packet again: SRTP would refuse it as a replay */
    if (step >= VP_JUMP_AHEAD && step < 0x10000u - VP_LATE_WINDOW) {
        vp_rebase(o, run, seq, ts, now); /* the talker's stream restarted */
        out_seq = (uint16_t)(seq + o->seq_offset);
    }
    uint32_t out_ts = ts + o->ts_offset;
    int end = o->header_len + payload_len;
    if (end > o->limit)
        return 0; /* no room for the SRTP trailer: no Opus frame is this large */
    unsigned char *b = o->buf;
    b[0] = o->first_byte;
    b[1] = (unsigned char)(o->second_byte | (marker ? 0x80 : 0));
    b[2] = (unsigned char)(out_seq >> 8);
    b[3] = (unsigned char)out_seq;
    b[4] = (unsigned char)(out_ts >> 24);
    b[5] = (unsigned char)(out_ts >> 16);
    b[6] = (unsigned char)(out_ts >> 8);
    b[7] = (unsigned char)out_ts;
    b[8] = (unsigned char)(o->ssrc >> 24);
    b[9] = (unsigned char)(o->ssrc >> 16);
    b[10] = (unsigned char)(o->ssrc >> 8);
    b[11] = (unsigned char)o->ssrc;
    memcpy(b + o->header_len, payload, (size_t)payload_len);
    o->pending_seq = out_seq;
    o->pending_ts = out_ts;
    return end;
}

void vp_commit(struct vp_output *o, int payload_len, double now)
{
    o->last_seq = o->pending_seq;
    o->last_ts = o->pending_ts;
    o->last_time = now;
    o->has_sent = 1;
    o->packets_sent += 1;
    o->bytes_sent += (uint64_t)payload_len;
}

static void vp_send_all(int fd, struct mmsghdr *msgs, int count)
{
    /* A full socket buffer drops the rest, as a network would; a datagram the kernel
       refuses (an unreachable address) is skipped and the others still go. */
    int done = 0;
    while (done < count) {
        int result = sendmmsg(fd, msgs + done, (unsigned int)(count - done), MSG_DONTWAIT);
        if (result > 0) {
            done += result;
            vp_totals.sent += (uint64_t)result;
            continue;
        }
        if (result < 0 && errno == EINTR)
            continue;
        if (result == 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            vp_totals.dropped += (uint64_t)(count - done);
            return;
        }
        vp_totals.dropped += 1;
        done += 1;
    }
}

static void vp_flush(struct mmsghdr *msgs, int *fds, int count)
{
    int first = fds[0], mixed = 0;
    for (int i = 1; i < count; i++)
        if (fds[i] != first) {
            mixed = 1;
            break;
        }
    if (!mixed) {
        vp_send_all(first, msgs, count);
        return;
    }
    /* Copies on several sockets (one per ICE address): one sendmmsg per socket. */
    struct mmsghdr group[VP_CHUNK];
    int done[VP_CHUNK];
    memset(done, 0, sizeof(done));
    for (int i = 0; i < count; i++) {
        if (done[i])
            continue;
        int n = 0;
        for (int j = i; j < count; j++)
            if (!done[j] && fds[j] == fds[i]) {
                group[n++] = msgs[j];
                done[j] = 1;
            }
        vp_send_all(fds[i], group, n);
    }
}

int vp_fanout(struct vp_output **outputs, int count, struct vp_output *exclude, uint64_t run,
              uint16_t seq, uint32_t ts, int marker, const char *data, int payload_start,
              int payload_len, double now, int *slow, int *slow_count)
{
    /* Returns how many outputs the packet was for (all but `exclude`); the indices of
       those not armed go to `slow` for the Python path. */
    struct mmsghdr msgs[VP_CHUNK];
    struct iovec iovs[VP_CHUNK];
    int fds[VP_CHUNK];
    int queued = 0, wanted = 0, slow_n = 0;
    const char *payload = data + payload_start;
    for (int i = 0; i < count; i++) {
        struct vp_output *o = outputs[i];
        if (o == exclude)
            continue;
        wanted++;
        if (o->epoch == NULL || *o->epoch != o->armed_epoch || o->srtp == NULL || *o->fd < 0 ||
            vp_protect == NULL) {
            slow[slow_n++] = i;
            continue;
        }
        int length = vp_rewrite(o, run, seq, ts, marker, payload, payload_len, now);
        if (length == 0)
            continue;
        int size = length;
        if (vp_protect(o->srtp, o->buf, &size) != 0) {
            vp_totals.refused += 1; /* one listener's refusal must not stop the fan-out */
            continue;
        }
        iovs[queued].iov_base = o->buf;
        iovs[queued].iov_len = (size_t)size;
        memset(&msgs[queued].msg_hdr, 0, sizeof(struct msghdr));
        msgs[queued].msg_hdr.msg_name = o->name;
        msgs[queued].msg_hdr.msg_namelen = o->name_len;
        msgs[queued].msg_hdr.msg_iov = &iovs[queued];
        msgs[queued].msg_hdr.msg_iovlen = 1;
        fds[queued] = *o->fd;
        vp_commit(o, payload_len, now);
        if (++queued == VP_CHUNK) {
            vp_flush(msgs, fds, queued);
            queued = 0;
        }
    }
    if (queued)
        vp_flush(msgs, fds, queued);
    *slow_count = slow_n;
    return wanted;
}
