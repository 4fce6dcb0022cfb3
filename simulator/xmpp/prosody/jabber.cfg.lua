-- Prosody as the jabber.lab XMPP server of the edgesim lab (a real federated XMPP partner).
-- A template: simulator.xmpp.prosody.render() fills the placeholders. Run it as its own user:
--   runuser -u prosody -- prosody -F --config DIR/prosody.cfg.lua

daemonize = false
pidfile = "${dir}/prosody.pid"
data_path = "${dir}/data"
log = { ${log_level} = "${dir}/prosody.log" }

-- one loopback address of its own, the lab's ports
interfaces = { "${address}" }
c2s_ports = { ${c2s_port} }
s2s_ports = { ${s2s_port} }
c2s_direct_tls_ports = { }
s2s_direct_tls_ports = { }
http_ports = { }
https_ports = { }

-- lab names come from the lab DNS (SRV _xmpp-server._tcp and A records)
unbound = {
	forward = "${dns}";
	resolvconf = false; -- only the lab DNS (else unbound mixes in the system resolvers)
	hoststxt = false;
	options = {
		["do-not-query-localhost"] = "no";
		-- the lab DNS answers NXDOMAIN for empty non-terminals such as contoso.lab
		["qname-minimisation"] = "no";
		["harden-below-nxdomain"] = "no";
	};
}

modules_enabled = {
	"disco"; "roster"; "saslauth"; "tls"; "dialback"; "ping"; "admin_shell";
}
modules_disabled = { ${modules_disabled} }

authentication = "internal_plain"
c2s_require_encryption = true
s2s_require_encryption = true
-- true: the Edge must authenticate with its certificate (SASL EXTERNAL, XEP-0178)
s2s_secure_auth = ${secure_auth}

ssl = {
	certificate = "${dir}/jabber.crt";
	key = "${dir}/jabber.key";
	cafile = "${dir}/lab-trust.pem";
}

VirtualHost "jabber.lab"
