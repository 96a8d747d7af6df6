/*
 * The cheapest possible milter, as a reference for bench/milter.py: built with gcc against
 * sendmail's libmilter (Debian: libmilter-dev).  It negotiates away every protocol step it can
 * (connect, HELO, MAIL, RCPT, DATA, headers, body, unknown commands), asks for no actions
 * and no macros (an undefined one at every stage), so Postfix only opens the connection,
 * negotiates, sends the (empty) macro packets and end-of-headers, which it accepts (Postfix
 * then skips the rest of the message for this milter).  Whatever drossel costs above
 * this is drossel's own cost.
 *
 * With the second argument "headers" it takes the headers instead of negotiating them away
 * (without a reply to each, SMFIP_NR_HDR, as drossel asks), like any filter that reads the
 * Received: lines must: Postfix then sends every header of every message, which is Postfix's
 * work, not the filter's.
 *
 * usage: noop_milter unix:/path | inet:PORT@127.0.0.1 [headers]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libmilter/mfapi.h>

/* take the headers (the "headers" argument), and did Postfix agree to send them without
 * waiting for replies? */
static int want_headers = 0;
static int headers_without_reply = 0;

static sfsistat noop_negotiate(SMFICTX *ctx, unsigned long actions, unsigned long steps,
                               unsigned long f2, unsigned long f3, unsigned long *want_actions,
                               unsigned long *want_steps, unsigned long *want_f2,
                               unsigned long *want_f3)
{
    (void) f2; (void) f3;
    /* Postfix sends a stage's macros in a packet of its own before the stage's command, also
     * for steps negotiated away, and falls back to its own milter_*_macros lists (the queue id
     * "i", the connect macros) for any stage the filter gives no list for.  So the cheapest
     * filter asks at every stage for a macro nobody defines, as drossel does where it needs
     * nothing: the macro packets then arrive empty. */
    *want_actions = 0;
    if ((actions & SMFIF_SETSYMLIST) != 0) {
        int stage, ok = 1;
        for (stage = SMFIM_CONNECT; stage <= SMFIM_EOH; stage++)
            ok = ok && smfi_setsymlist(ctx, stage, "{noop_unused}") == MI_SUCCESS;
        if (ok)
            *want_actions = SMFIF_SETSYMLIST;
    }
    *want_steps = steps & (SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT
                           | SMFIP_NODATA | SMFIP_NOBODY | SMFIP_NOUNKNOWN
                           | (want_headers ? SMFIP_NR_HDR : SMFIP_NOHDRS));
    headers_without_reply = want_headers && (steps & SMFIP_NR_HDR) != 0;
    *want_f2 = 0;
    *want_f3 = 0;
    return SMFIS_CONTINUE;
}

static sfsistat noop_header(SMFICTX *ctx, char *name, char *value)
{
    (void) ctx; (void) name; (void) value;
    return headers_without_reply ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat noop_eoh(SMFICTX *ctx)
{
    (void) ctx;
    return SMFIS_ACCEPT;
}

static struct smfiDesc noop = {
    .xxfi_name = "noop",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = 0,
    .xxfi_header = noop_header,  /* negotiated away unless "headers" */
    .xxfi_eoh = noop_eoh,
    .xxfi_negotiate = noop_negotiate,
};

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "headers") != 0)) {
        fprintf(stderr, "usage: %s unix:/path | inet:PORT@HOST [headers]\n", argv[0]);
        return 2;
    }
    want_headers = argc == 3;
    if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_setbacklog(1024) == MI_FAILURE
        || smfi_register(noop) == MI_FAILURE) {
        fprintf(stderr, "noop_milter: cannot set up %s\n", argv[1]);
        return 1;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
