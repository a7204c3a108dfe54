//! Test certificates made with rcgen: a CA, a server certificate for 127.0.0.1/localhost, client certificates.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test CA that can sign server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA");
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> CertPair {
        self.leaf(names, names.first().copied().unwrap_or("server"), ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose common name is `name`.
    pub fn client(&self, name: &str) -> CertPair {
        self.leaf(&[name], name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose) -> CertPair {
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("valid subject alt names");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// A CA with a server certificate for 127.0.0.1 and localhost and one client
/// certificate: everything a mutual-TLS test needs.
pub struct TestPki {
    pub ca: TestCa,
    pub ca_pem: String,
    pub server: CertPair,
    pub client: CertPair,
}

impl TestPki {
    pub fn generate() -> Self {
        let ca = TestCa::new("plughost test ca");
        let server = ca.server(&["127.0.0.1", "localhost"]);
        let client = ca.client("test-worker");
        TestPki { ca_pem: ca.cert_pem(), ca, server, client }
    }
}
