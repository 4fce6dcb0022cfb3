/*
 * edgesim: lets pidgin-sipe parse XML again on Debian 12's libxml2 (quirk sipe-libxml2-sax1,
 * docs/sip.md). Built by simulator/scenario/sipe.py and loaded into BitlBee with LD_PRELOAD.
 *
 * SIPE's sipe_xml_parse() hands xmlSAXUserParseMemory() a handler with only the SAX1 element
 * callbacks (startElement, endElement) but "initialized" set to XML_SAX2_MAGIC. The libxml2 of
 * Debian 12 (2.9.14+dfsg-1.3~deb12u5, seen here) then parses as SAX2 and, finding no
 * startElementNs, calls no element callback at all: every document SIPE reads comes out empty
 * (contact list, presence, provisioning). This wrapper hands libxml2 a copy of such a handler
 * marked as SAX1 (initialized = 1), so the callbacks SIPE set are the ones called.
 *
 * The handler's layout is libxml2's public ABI (struct _xmlSAXHandler): 27 callback pointers,
 * "initialized", _private, startElementNs, endElementNs, serror.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

#define XML_SAX2_MAGIC 0xDEEDBEAF

typedef struct {
    void *callbacks[27]; /* [14] startElement, [15] endElement */
    unsigned int initialized;
    void *private_data;
    void *startElementNs;
    void *endElementNs;
    void *serror;
} sax_handler;

typedef int (*parse_memory)(sax_handler *, void *, const char *, int);

int xmlSAXUserParseMemory(sax_handler *sax, void *user_data, const char *buffer, int size)
{
    static parse_memory real;
    if (real == NULL)
        real = (parse_memory)dlsym(RTLD_NEXT, "xmlSAXUserParseMemory");
    if (real == NULL)
        return -1;
    if (sax != NULL && sax->initialized == XML_SAX2_MAGIC && sax->startElementNs == NULL &&
        sax->endElementNs == NULL && (sax->callbacks[14] != NULL || sax->callbacks[15] != NULL)) {
        sax_handler sax1;
        memcpy(&sax1, sax, sizeof sax1);
        sax1.initialized = 1;
        return real(&sax1, user_data, buffer, size);
    }
    return real(sax, user_data, buffer, size);
}
