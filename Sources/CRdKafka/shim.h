// Thin shim over librdkafka (>= 2.3). rd_kafka_producev is variadic, which Swift cannot call; the helpers
// below wrap the few calls dnpipes makes with it.
#ifndef DNPIPES_CRDKAFKA_SHIM_H
#define DNPIPES_CRDKAFKA_SHIM_H
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <string.h>

/// Produces one message (copied) to topic/partition, with an opaque for its delivery report. When
/// `marker_name` is set, the message carries that header with an empty value.
static inline rd_kafka_resp_err_t dnp_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                                              const void *payload, size_t len, void *opaque,
                                              const char *marker_name) {
    if (marker_name) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
        rd_kafka_header_add(hdrs, marker_name, -1, "", 0);
        rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                                    RD_KAFKA_V_VALUE((void *)payload, len),
                                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                    RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_HEADERS(hdrs),
                                                    RD_KAFKA_V_END);
        if (err) rd_kafka_headers_destroy(hdrs);
        return err;
    }
    return rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
}

/// Whether a consumed message carries the header `name`.
static inline int dnp_has_header(const rd_kafka_message_t *m, const char *name) {
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR || !hdrs) return 0;
    const void *value = NULL;
    size_t size = 0;
    return rd_kafka_header_get_last(hdrs, name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

static inline const char *dnp_message_topic(const rd_kafka_message_t *m) {
    return m->rkt ? rd_kafka_topic_name(m->rkt) : "";
}

#endif
