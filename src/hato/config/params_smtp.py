"""Parameters of the SMTP and LMTP clients (outbound delivery), and the TLS
settings that server and client share.

Data only: each ``_p(...)`` call registers one parameter into the table in
:mod:`hato.config.params`, which imports this module.
"""

from __future__ import annotations

from .params import B, I, L, M, S, T, _p

# --- smtp client: routing, DNS, protocol and timeouts -------------------------
_p("best_mx_transport", S, "",
   "Where the SMTP client delivers mail when it finds itself the best MX host.")
_p("disable_dns_lookups", B, "no", "Obsolete: turn off DNS lookups in the SMTP and LMTP clients.")
_p("dns_ncache_ttl_fix_enable", B, "no",
   "Work around resolvers that report a negative-cache TTL of zero.")
_p("dnssec_probe", S, "ns:.", "The query type and name used to check that DNSSEC validation works.")
_p("ignore_mx_lookup_error", B, "no",
   "Fall back to A/AAAA lookups when an MX lookup gets no answer.")
_p("smtp_address_preference", S, "any",
   "Which address family to try first for equal-preference MX hosts: ipv6, ipv4 or any.")
_p("smtp_address_verify_target", S, "rcpt",
   "The protocol stage that decides an address probe: rcpt or data.")
_p("smtp_always_send_ehlo", B, "yes", "Always send EHLO at the start of a session.")
_p("smtp_balance_inet_protocols", B, "yes",
   "Mix IPv4 and IPv6 addresses so both get tried within smtp_mx_address_limit.")
_p("smtp_bind_address", S, "", "The local IPv4 address for outgoing connections.")
_p("smtp_bind_address6", S, "", "The local IPv6 address for outgoing connections.")
_p("smtp_bind_address_enforce", B, "no", "Defer delivery when the bind address cannot be used.")
_p("smtp_body_checks", M, "", "Body checks applied while sending over SMTP.")
_p("smtp_cname_overrides_servername", B, "no",
   "Use the CNAME target as the server name for logging, passwords and TLS.")
_p("smtp_connect_timeout", T, "30s",
   "Time limit for making a TCP connection; 0 means the system's limit.")
_p("smtp_connection_cache_destinations", L, "",
   "Destinations whose connections are always cached for reuse.")
_p("smtp_connection_cache_on_demand", B, "yes",
   "Cache connections while a destination has a backlog of mail.")
_p("smtp_connection_cache_time_limit", T, "2s",
   "How long an idle cached connection stays open.", lo=1)
_p("smtp_connection_reuse_count_limit", I, "0",
   "How often a connection may be reused; 0 means no limit.")
_p("smtp_connection_reuse_time_limit", T, "300s", "How long a connection may be reused.", lo=1)
_p("smtp_data_done_timeout", T, "600s", 'Time limit for sending "." and reading the reply.', lo=1)
_p("smtp_data_init_timeout", T, "120s", "Time limit for sending DATA and reading the reply.", lo=1)
_p("smtp_data_xfer_timeout", T, "180s", "Time limit for sending the message content.", lo=1)
_p("smtp_defer_if_no_mx_address_found", B, "no",
   "Defer, rather than bounce, when no MX host has an address.")
_p("smtp_delivery_status_filter", M, "$default_delivery_status_filter",
   "Like default_delivery_status_filter, for the smtp delivery agent.")
_p("smtp_discard_ehlo_keyword_address_maps", M, "",
   "Per-server EHLO keywords that the SMTP client ignores.")
_p("smtp_discard_ehlo_keywords", L, "", "EHLO keywords that the SMTP client ignores.")
_p("smtp_dns_reply_filter", M, "", "Tables that filter DNS results that the SMTP client looks up.")
_p("smtp_dns_resolver_options", L, "", "Resolver options for the SMTP client's DNS lookups.")
_p("smtp_dns_support_level", S, "", "DNS support level: disabled, enabled or dnssec.")
_p("smtp_fallback_relay", L, "$fallback_relay",
   "Relay hosts tried when a destination cannot be found or reached.")
_p("smtp_generic_maps", M, "", "Address rewriting tables applied when sending over SMTP.")
_p("smtp_header_checks", M, "", "Header checks applied while sending over SMTP.")
_p("smtp_helo_name", S, "$myhostname", "The hostname sent in HELO or EHLO.")
_p("smtp_helo_timeout", T, "300s", "Time limit for the greeting and the HELO/EHLO reply.", lo=1)
_p("smtp_host_lookup", S, "dns", "How host addresses are found: dns, native or both.")
_p("smtp_line_length_limit", I, "998", "Longer lines are folded when sent; 0 means no limit.")
_p("smtp_mail_timeout", T, "300s", "Time limit for sending MAIL FROM and reading the reply.", lo=1)
_p("smtp_mime_header_checks", M, "", "MIME header checks applied while sending over SMTP.")
_p("smtp_min_data_rate", I, "500",
   "The minimal DATA rate in bytes per second under per-request deadlines.", lo=1)
_p("smtp_mx_address_limit", I, "5",
   "Maximal MX host addresses tried per delivery; 0 means no limit.")
_p("smtp_mx_session_limit", I, "2", "Maximal SMTP sessions per delivery; 0 means no limit.")
_p("smtp_nested_header_checks", M, "", "Nested header checks applied while sending over SMTP.")
_p("smtp_never_send_ehlo", B, "no", "Never send EHLO; always HELO.")
_p("smtp_per_request_deadline", B, "${smtp_per_record_deadline?{$smtp_per_record_deadline}:{no}}",
   "Make the smtp_*_timeout limits deadlines for whole requests.")
_p("smtp_pix_workaround_delay_time", T, "10s",
   'The pause before "." for the PIX firewall workaround.', lo=1)
_p("smtp_pix_workaround_maps", M, "", "Per-server PIX firewall workarounds.")
_p("smtp_pix_workaround_threshold_time", T, "500s",
   "How long mail must be queued before the PIX workaround is used.")
_p("smtp_pix_workarounds", L, "disable_esmtp,delay_dotcrlf",
   "Which PIX firewall workarounds to use.")
_p("smtp_quit_timeout", T, "300s", "Time limit for sending QUIT and reading the reply.", lo=1)
_p("smtp_quote_rfc821_envelope", B, "yes", "Quote envelope addresses as RFC 5321 requires.")
_p("smtp_randomize_addresses", B, "yes", "Shuffle addresses of equal-preference MX hosts.")
_p("smtp_rcpt_timeout", T, "300s", "Time limit for sending RCPT TO and reading the reply.", lo=1)
_p("smtp_reply_filter", M, "", "Tables that rewrite server replies line by line.")
_p("smtp_rset_timeout", T, "20s", "Time limit for sending RSET and reading the reply.", lo=1)
_p("smtp_send_dummy_mail_auth", B, "no", 'Send "AUTH=<>" with MAIL FROM in authenticated sessions.')
_p("smtp_send_xforward_command", B, "no", "Send XFORWARD when the server offers it.")
_p("smtp_skip_5xx_greeting", B, "yes", "Try the next server when one greets with 5xx.")
_p("smtp_skip_quit_response", B, "yes", "Do not wait for the reply to QUIT.")
_p("smtp_tcp_port", S, "smtp", "The default server port.")
_p("smtp_xforward_timeout", T, "300s",
   "Time limit for sending XFORWARD and reading the reply.", lo=1)
_p("tcp_windowsize", I, "0",
   "A TCP window size for routers that break window scaling; 0 means the system default.")

# --- smtp client: TLS ---------------------------------------------------------
_p("smtp_enforce_tls", B, "no",
   "Obsolete: require TLS and a verified server name (use smtp_tls_security_level).")
_p("smtp_starttls_timeout", T, "300s",
   "Time limit for each read and write during the TLS handshake and shutdown.", lo=1)
_p("smtp_tls_CAfile", S, "", "A PEM file of CA certificates trusted for server certificates.")
_p("smtp_tls_CApath", S, "", "A directory of PEM CA certificates trusted for server certificates.")
_p("smtp_tls_block_early_mail_reply", B, "no",
   "Detect servers that reply to commands injected before the TLS handshake.")
_p("smtp_tls_cert_file", S, "", "The client's RSA certificate (PEM).")
_p("smtp_tls_chain_files", L, "",
   "PEM files each holding a client private key and its certificate chain.")
_p("smtp_tls_ciphers", S, "medium", "The lowest cipher grade used with opportunistic TLS.")
_p("smtp_tls_connection_reuse", B, "no", "Reuse TLS connections for several deliveries.")
_p("smtp_tls_dane_insecure_mx_policy", S,
   "${{$smtp_tls_security_level} == {dane} ? {dane} : {may}}",
   "The TLS policy for MX hosts with TLSA records found through an unsigned MX lookup.")
_p("smtp_tls_dcert_file", S, "", "The client's DSA certificate (PEM).")
_p("smtp_tls_dkey_file", S, "$smtp_tls_dcert_file", "The client's DSA private key (PEM).")
_p("smtp_tls_eccert_file", S, "", "The client's ECDSA certificate (PEM).")
_p("smtp_tls_eckey_file", S, "$smtp_tls_eccert_file", "The client's ECDSA private key (PEM).")
_p("smtp_tls_enforce_peername", B, "yes",
   "Obsolete: require the server name to match its certificate under mandatory TLS.")
_p("smtp_tls_exclude_ciphers", L, "", "Ciphers excluded at every TLS level.")
_p("smtp_tls_fingerprint_cert_match", L, "",
   "Server certificate fingerprints accepted at the fingerprint level.")
_p("smtp_tls_fingerprint_digest", S, "${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}",
   "The digest used for server certificate fingerprints.")
_p("smtp_tls_force_insecure_host_tlsa_lookup", B, "no",
   "Look up TLSA records even for hosts in unsigned zones.")
_p("smtp_tls_key_file", S, "$smtp_tls_cert_file", "The client's RSA private key (PEM).")
_p("smtp_tls_loglevel", S, "0", "How much TLS activity the SMTP client logs (0 to 4).")
_p("smtp_tls_mandatory_ciphers", S, "medium", "The lowest cipher grade used with mandatory TLS.")
_p("smtp_tls_mandatory_exclude_ciphers", L, "", "Ciphers also excluded with mandatory TLS.")
_p("smtp_tls_mandatory_protocols", L, ">=TLSv1", "TLS protocol versions used with mandatory TLS.")
_p("smtp_tls_note_starttls_offer", B, "no",
   "Log servers that offer STARTTLS when TLS is not in use for them.")
_p("smtp_tls_per_site", M, "", "Obsolete per-destination TLS policy tables.")
_p("smtp_tls_policy_maps", M, "", "Per-destination TLS policy tables.")
_p("smtp_tls_protocols", L, ">=TLSv1", "TLS protocol versions used with opportunistic TLS.")
_p("smtp_tls_scert_verifydepth", I, "9", "The maximal chain depth for server certificates.")
_p("smtp_tls_secure_cert_match", L, "nexthop, dot-nexthop",
   "How the server name is matched at the secure level.")
_p("smtp_tls_security_level", S, "",
   "The client TLS level: none, may, encrypt, dane(-only), fingerprint, verify, secure.")
_p("smtp_tls_servername", S, "", "The name sent with SNI; empty means none.")
_p("smtp_tls_session_cache_database", M, "", "The table for the client's TLS session cache.")
_p("smtp_tls_session_cache_timeout", T, "3600s",
   "How long cached client TLS sessions stay valid.", hi=8640000)
_p("smtp_tls_trust_anchor_file", S, "", "PEM files with trust anchors for server verification.")
_p("smtp_tls_verify_cert_match", L, "hostname",
   "How the server name is matched at the verify level.")
_p("smtp_tls_wrappermode", B, "no", "Use TLS from the first byte (port 465) instead of STARTTLS.")
_p("smtp_use_tls", B, "no",
   "Obsolete: use TLS when the server offers it (use smtp_tls_security_level = may).")

# --- smtp client: SASL authentication -----------------------------------------
_p("smtp_sasl_auth_cache_name", M, "",
   "A table that remembers failed authentications so they are not repeated.")
_p("smtp_sasl_auth_cache_time", T, "90d",
   "How long a failed authentication is remembered.", unit="d")
_p("smtp_sasl_auth_enable", B, "no", "Authenticate to servers with SASL.")
_p("smtp_sasl_auth_soft_bounce", B, "yes",
   "Defer, rather than bounce, when a server rejects the credentials with 535.")
_p("smtp_sasl_mechanism_filter", L, "", "Which offered SASL mechanisms the client may use.")
_p("smtp_sasl_password_maps", M, "", "Tables of username:password per sender, server or next hop.")
_p("smtp_sasl_path", S, "", "Backend-specific location information for the client SASL backend.")
_p("smtp_sasl_security_options", L, "noplaintext, noanonymous",
   "Restrictions on client SASL mechanisms over plaintext sessions.")
_p("smtp_sasl_tls_security_options", L, "$smtp_sasl_security_options",
   "Restrictions on client SASL mechanisms over TLS sessions.")
_p("smtp_sasl_tls_verified_security_options", L, "$smtp_sasl_tls_security_options",
   "Restrictions on client SASL mechanisms over TLS with a verified server.")
_p("smtp_sasl_type", S, "cyrus", "The client SASL backend: cyrus.")
_p("smtp_sender_dependent_authentication", B, "no",
   "Choose SASL credentials by sender (turns off connection reuse).")

# --- TLS settings shared by server and client ---------------------------------
_p("tls_append_default_CA", B, "no", "Also trust the system's default CA certificates.")
_p("tls_config_file", S, "default",
   'An OpenSSL configuration file with baseline settings; "default" or "none" allowed.')
_p("tls_config_name", S, "", "The application name passed to OpenSSL configuration.")
_p("tls_daemon_random_bytes", I, "32",
   "Random bytes a daemon requests to seed its generator.", lo=1)
_p("tls_dane_digests", L, "sha512 sha256", "DANE TLSA digest algorithms, most preferred first.")
_p("tls_disable_workarounds", L, "", "OpenSSL bug workarounds to turn off.")
_p("tls_eecdh_auto_curves", L, "X25519 X448 prime256v1 secp521r1 secp384r1",
   "The elliptic curves offered, most preferred first.")
_p("tls_eecdh_strong_curve", S, "prime256v1", 'The curve for the "strong" ECDH grade.')
_p("tls_eecdh_ultra_curve", S, "secp384r1", 'The curve for the "ultra" ECDH grade.')
_p("tls_export_cipherlist", S, "aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH",
   'The OpenSSL cipher list of the "export" grade.')
_p("tls_fast_shutdown_enable", B, "yes",
   "Do not wait for the peer's close-notify when closing TLS.")
_p("tls_high_cipherlist", S, "aNULL:-aNULL:HIGH:@STRENGTH",
   'The OpenSSL cipher list of the "high" grade.')
_p("tls_legacy_public_key_fingerprints", B, "no",
   "Also accept public-key fingerprints computed the old, wrong way.")
_p("tls_low_cipherlist", S, "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH",
   'The OpenSSL cipher list of the "low" grade.')
_p("tls_medium_cipherlist", S, "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH",
   'The OpenSSL cipher list of the "medium" grade.')
_p("tls_null_cipherlist", S, "eNULL:!aNULL",
   'The OpenSSL cipher list of the "null" grade (no encryption).')
_p("tls_preempt_cipherlist", B, "no", "Prefer the server's cipher order over the client's.")
_p("tls_random_bytes", I, "32", "Bytes read from tls_random_source when seeding.", lo=1)
_p("tls_random_exchange_name", S, "${data_directory}/prng_exch",
   "The file that keeps the random generator's state.")
_p("tls_random_prng_update_period", T, "3600s",
   "How often the random generator's state is saved.", lo=1)
_p("tls_random_reseed_period", T, "3600s",
   "The longest time between reseeds of the random generator.", lo=1)
_p("tls_random_source", S, "dev:/dev/urandom", "The external entropy source.")
_p("tls_server_sni_maps", M, "", "Tables mapping SNI names to keys and certificate chains.")
_p("tls_session_ticket_cipher", S, "aes-256-cbc", "The cipher that encrypts TLS session tickets.")
_p("tls_ssl_options", L, "", "OpenSSL options to turn on.")
_p("tls_wildcard_matches_multiple_labels", B, "yes",
   'Let "*" in a certificate match several DNS labels.')

# --- lmtp client (mirrors the smtp client's parameters) -----------------------
_p("lmtp_address_preference", S, "any", "Like smtp_address_preference, for the LMTP client.")
_p("lmtp_address_verify_target", S, "rcpt", "Like smtp_address_verify_target, for the LMTP client.")
_p("lmtp_assume_final", B, "no",
   'Treat LMTP servers without DSN as final delivery ("delivered", not "relayed").')
_p("lmtp_balance_inet_protocols", B, "yes",
   "Like smtp_balance_inet_protocols, for the LMTP client.")
_p("lmtp_bind_address", S, "", "Like smtp_bind_address, for the LMTP client.")
_p("lmtp_bind_address6", S, "", "Like smtp_bind_address6, for the LMTP client.")
_p("lmtp_bind_address_enforce", B, "no", "Like smtp_bind_address_enforce, for the LMTP client.")
_p("lmtp_body_checks", M, "", "Like smtp_body_checks, for the LMTP client.")
_p("lmtp_cname_overrides_servername", B, "no",
   "Like smtp_cname_overrides_servername, for the LMTP client.")
_p("lmtp_connect_timeout", T, "0s", "Like smtp_connect_timeout, for the LMTP client.")
_p("lmtp_connection_cache_destinations", L, "",
   "Like smtp_connection_cache_destinations, for the LMTP client.")
_p("lmtp_connection_cache_on_demand", B, "yes",
   "Like smtp_connection_cache_on_demand, for the LMTP client.")
_p("lmtp_connection_cache_time_limit", T, "2s",
   "Like smtp_connection_cache_time_limit, for the LMTP client.", lo=1)
_p("lmtp_connection_reuse_count_limit", I, "0",
   "Like smtp_connection_reuse_count_limit, for the LMTP client.")
_p("lmtp_connection_reuse_time_limit", T, "300s",
   "Like smtp_connection_reuse_time_limit, for the LMTP client.", lo=1)
_p("lmtp_data_done_timeout", T, "600s", "Like smtp_data_done_timeout, for the LMTP client.", lo=1)
_p("lmtp_data_init_timeout", T, "120s", "Like smtp_data_init_timeout, for the LMTP client.", lo=1)
_p("lmtp_data_xfer_timeout", T, "180s", "Like smtp_data_xfer_timeout, for the LMTP client.", lo=1)
_p("lmtp_defer_if_no_mx_address_found", B, "no",
   "Like smtp_defer_if_no_mx_address_found, for the LMTP client.")
_p("lmtp_delivery_status_filter", M, "$default_delivery_status_filter",
   "Like smtp_delivery_status_filter, for the LMTP client.")
_p("lmtp_discard_lhlo_keyword_address_maps", M, "",
   "Per-server LHLO keywords that the LMTP client ignores.")
_p("lmtp_discard_lhlo_keywords", L, "", "LHLO keywords that the LMTP client ignores.")
_p("lmtp_dns_reply_filter", M, "", "Like smtp_dns_reply_filter, for the LMTP client.")
_p("lmtp_dns_resolver_options", L, "", "Like smtp_dns_resolver_options, for the LMTP client.")
_p("lmtp_dns_support_level", S, "", "Like smtp_dns_support_level, for the LMTP client.")
_p("lmtp_enforce_tls", B, "no", "Like smtp_enforce_tls, for the LMTP client.")
_p("lmtp_fallback_relay", L, "", "Like smtp_fallback_relay, for the LMTP client.")
_p("lmtp_generic_maps", M, "", "Like smtp_generic_maps, for the LMTP client.")
_p("lmtp_header_checks", M, "", "Like smtp_header_checks, for the LMTP client.")
_p("lmtp_host_lookup", S, "dns", "Like smtp_host_lookup, for the LMTP client.")
_p("lmtp_lhlo_name", S, "$myhostname", "The hostname sent in LHLO.")
_p("lmtp_lhlo_timeout", T, "300s", "Time limit for the greeting and the LHLO reply.", lo=1)
_p("lmtp_line_length_limit", I, "998", "Like smtp_line_length_limit, for the LMTP client.")
_p("lmtp_mail_timeout", T, "300s", "Like smtp_mail_timeout, for the LMTP client.", lo=1)
_p("lmtp_mime_header_checks", M, "", "Like smtp_mime_header_checks, for the LMTP client.")
_p("lmtp_min_data_rate", I, "500", "Like smtp_min_data_rate, for the LMTP client.", lo=1)
_p("lmtp_mx_address_limit", I, "5", "Like smtp_mx_address_limit, for the LMTP client.")
_p("lmtp_mx_session_limit", I, "2", "Like smtp_mx_session_limit, for the LMTP client.")
_p("lmtp_nested_header_checks", M, "", "Like smtp_nested_header_checks, for the LMTP client.")
_p("lmtp_per_request_deadline", B, "${lmtp_per_record_deadline?{$lmtp_per_record_deadline}:{no}}",
   "Like smtp_per_request_deadline, for the LMTP client.")
_p("lmtp_pix_workaround_delay_time", T, "10s",
   "Like smtp_pix_workaround_delay_time, for the LMTP client.", lo=1)
_p("lmtp_pix_workaround_maps", M, "", "Like smtp_pix_workaround_maps, for the LMTP client.")
_p("lmtp_pix_workaround_threshold_time", T, "500s",
   "Like smtp_pix_workaround_threshold_time, for the LMTP client.")
_p("lmtp_pix_workarounds", L, "disable_esmtp,delay_dotcrlf",
   "Like smtp_pix_workarounds, for the LMTP client.")
_p("lmtp_quit_timeout", T, "300s", "Like smtp_quit_timeout, for the LMTP client.", lo=1)
_p("lmtp_quote_rfc821_envelope", B, "yes", "Like smtp_quote_rfc821_envelope, for the LMTP client.")
_p("lmtp_randomize_addresses", B, "yes", "Like smtp_randomize_addresses, for the LMTP client.")
_p("lmtp_rcpt_timeout", T, "300s", "Like smtp_rcpt_timeout, for the LMTP client.", lo=1)
_p("lmtp_reply_filter", M, "", "Like smtp_reply_filter, for the LMTP client.")
_p("lmtp_rset_timeout", T, "20s", "Like smtp_rset_timeout, for the LMTP client.", lo=1)
_p("lmtp_sasl_auth_cache_name", M, "", "Like smtp_sasl_auth_cache_name, for the LMTP client.")
_p("lmtp_sasl_auth_cache_time", T, "90d",
   "Like smtp_sasl_auth_cache_time, for the LMTP client.", unit="d")
_p("lmtp_sasl_auth_enable", B, "no", "Like smtp_sasl_auth_enable, for the LMTP client.")
_p("lmtp_sasl_auth_soft_bounce", B, "yes", "Like smtp_sasl_auth_soft_bounce, for the LMTP client.")
_p("lmtp_sasl_mechanism_filter", L, "", "Like smtp_sasl_mechanism_filter, for the LMTP client.")
_p("lmtp_sasl_password_maps", M, "", "Like smtp_sasl_password_maps, for the LMTP client.")
_p("lmtp_sasl_path", S, "", "Like smtp_sasl_path, for the LMTP client.")
_p("lmtp_sasl_security_options", L, "noplaintext, noanonymous",
   "Like smtp_sasl_security_options, for the LMTP client.")
_p("lmtp_sasl_tls_security_options", L, "$lmtp_sasl_security_options",
   "Like smtp_sasl_tls_security_options, for the LMTP client.")
_p("lmtp_sasl_tls_verified_security_options", L, "$lmtp_sasl_tls_security_options",
   "Like smtp_sasl_tls_verified_security_options, for the LMTP client.")
_p("lmtp_sasl_type", S, "cyrus", "Like smtp_sasl_type, for the LMTP client.")
_p("lmtp_send_dummy_mail_auth", B, "no", "Like smtp_send_dummy_mail_auth, for the LMTP client.")
_p("lmtp_send_xforward_command", B, "no", "Like smtp_send_xforward_command, for the LMTP client.")
_p("lmtp_sender_dependent_authentication", B, "no",
   "Like smtp_sender_dependent_authentication, for the LMTP client.")
_p("lmtp_skip_5xx_greeting", B, "yes", "Like smtp_skip_5xx_greeting, for the LMTP client.")
_p("lmtp_skip_quit_response", B, "no", "Like smtp_skip_quit_response, for the LMTP client.")
_p("lmtp_starttls_timeout", T, "300s", "Like smtp_starttls_timeout, for the LMTP client.", lo=1)
_p("lmtp_tcp_port", S, "24", "Like smtp_tcp_port, for the LMTP client.")
_p("lmtp_tls_CAfile", S, "", "Like smtp_tls_CAfile, for the LMTP client.")
_p("lmtp_tls_CApath", S, "", "Like smtp_tls_CApath, for the LMTP client.")
_p("lmtp_tls_block_early_mail_reply", B, "no",
   "Like smtp_tls_block_early_mail_reply, for the LMTP client.")
_p("lmtp_tls_cert_file", S, "", "Like smtp_tls_cert_file, for the LMTP client.")
_p("lmtp_tls_chain_files", L, "", "Like smtp_tls_chain_files, for the LMTP client.")
_p("lmtp_tls_ciphers", S, "medium", "Like smtp_tls_ciphers, for the LMTP client.")
_p("lmtp_tls_connection_reuse", B, "no", "Like smtp_tls_connection_reuse, for the LMTP client.")
_p("lmtp_tls_dcert_file", S, "", "Like smtp_tls_dcert_file, for the LMTP client.")
_p("lmtp_tls_dkey_file", S, "$lmtp_tls_dcert_file", "Like smtp_tls_dkey_file, for the LMTP client.")
_p("lmtp_tls_eccert_file", S, "", "Like smtp_tls_eccert_file, for the LMTP client.")
_p("lmtp_tls_eckey_file", S, "$lmtp_tls_eccert_file",
   "Like smtp_tls_eckey_file, for the LMTP client.")
_p("lmtp_tls_enforce_peername", B, "yes", "Like smtp_tls_enforce_peername, for the LMTP client.")
_p("lmtp_tls_exclude_ciphers", L, "", "Like smtp_tls_exclude_ciphers, for the LMTP client.")
_p("lmtp_tls_fingerprint_cert_match", L, "",
   "Like smtp_tls_fingerprint_cert_match, for the LMTP client.")
_p("lmtp_tls_fingerprint_digest", S, "${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}",
   "Like smtp_tls_fingerprint_digest, for the LMTP client.")
_p("lmtp_tls_force_insecure_host_tlsa_lookup", B, "no",
   "Like smtp_tls_force_insecure_host_tlsa_lookup, for the LMTP client.")
_p("lmtp_tls_key_file", S, "$lmtp_tls_cert_file", "Like smtp_tls_key_file, for the LMTP client.")
_p("lmtp_tls_loglevel", S, "0", "Like smtp_tls_loglevel, for the LMTP client.")
_p("lmtp_tls_mandatory_ciphers", S, "medium",
   "Like smtp_tls_mandatory_ciphers, for the LMTP client.")
_p("lmtp_tls_mandatory_exclude_ciphers", L, "",
   "Like smtp_tls_mandatory_exclude_ciphers, for the LMTP client.")
_p("lmtp_tls_mandatory_protocols", L, ">=TLSv1",
   "Like smtp_tls_mandatory_protocols, for the LMTP client.")
_p("lmtp_tls_note_starttls_offer", B, "no",
   "Like smtp_tls_note_starttls_offer, for the LMTP client.")
_p("lmtp_tls_per_site", M, "", "Like smtp_tls_per_site, for the LMTP client.")
_p("lmtp_tls_policy_maps", M, "", "Like smtp_tls_policy_maps, for the LMTP client.")
_p("lmtp_tls_protocols", L, ">=TLSv1", "Like smtp_tls_protocols, for the LMTP client.")
_p("lmtp_tls_scert_verifydepth", I, "9", "Like smtp_tls_scert_verifydepth, for the LMTP client.")
_p("lmtp_tls_secure_cert_match", L, "nexthop",
   "Like smtp_tls_secure_cert_match, for the LMTP client.")
_p("lmtp_tls_security_level", S, "", "Like smtp_tls_security_level, for the LMTP client.")
_p("lmtp_tls_servername", S, "", "Like smtp_tls_servername, for the LMTP client.")
_p("lmtp_tls_session_cache_database", M, "",
   "Like smtp_tls_session_cache_database, for the LMTP client.")
_p("lmtp_tls_session_cache_timeout", T, "3600s",
   "Like smtp_tls_session_cache_timeout, for the LMTP client.", hi=8640000)
_p("lmtp_tls_trust_anchor_file", S, "", "Like smtp_tls_trust_anchor_file, for the LMTP client.")
_p("lmtp_tls_verify_cert_match", L, "hostname",
   "Like smtp_tls_verify_cert_match, for the LMTP client.")
_p("lmtp_tls_wrappermode", B, "no", "Like smtp_tls_wrappermode, for the LMTP client.")
_p("lmtp_use_tls", B, "no", "Like smtp_use_tls, for the LMTP client.")
_p("lmtp_xforward_timeout", T, "300s", "Like smtp_xforward_timeout, for the LMTP client.", lo=1)
