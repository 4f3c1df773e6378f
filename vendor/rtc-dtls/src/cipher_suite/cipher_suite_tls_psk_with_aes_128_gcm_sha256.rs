use super::*;
use crate::crypto::crypto_gcm::*;
use crate::prf::*;

#[derive(Default)]
/// The shared `TLS_PSK_WITH_AES_128_GCM_SHA256` implementation, parameterized over the key exchange and signature.
pub struct CipherSuiteTlsPskWithAes128GcmSha256 {
    gcm: Option<CryptoGcm>,
}

impl CipherSuiteTlsPskWithAes128GcmSha256 {
    const PRF_MAC_LEN: usize = 0;
    const PRF_KEY_LEN: usize = 16;
    const PRF_IV_LEN: usize = 4;
}

impl CipherSuite for CipherSuiteTlsPskWithAes128GcmSha256 {
    fn to_string(&self) -> String {
        "TLS_PSK_WITH_AES_128_GCM_SHA256".to_owned()
    }

    fn id(&self) -> CipherSuiteId {
        CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256
    }

    fn certificate_type(&self) -> ClientCertificateType {
        ClientCertificateType::Unsupported
    }

    fn hash_func(&self) -> CipherSuiteHash {
        CipherSuiteHash::Sha256
    }

    fn is_psk(&self) -> bool {
        true
    }

    fn is_initialized(&self) -> bool {
        self.gcm.is_some()
    }

    fn init(
        &mut self,
        provider: Arc<dyn RTCCryptoProvider>,
        master_secret: &[u8],
        client_random: &[u8],
        server_random: &[u8],
        is_client: bool,
    ) -> Result<()> {
        let keys = prf_encryption_keys(
            provider.crypto(),
            master_secret,
            client_random,
            server_random,
            EncryptionKeyLengths {
                mac: CipherSuiteTlsPskWithAes128GcmSha256::PRF_MAC_LEN,
                key: CipherSuiteTlsPskWithAes128GcmSha256::PRF_KEY_LEN,
                iv: CipherSuiteTlsPskWithAes128GcmSha256::PRF_IV_LEN,
            },
            self.hash_func(),
        )?;

        if is_client {
            self.gcm = Some(CryptoGcm::new(
                provider,
                &keys.client_write_key,
                &keys.client_write_iv,
                &keys.server_write_key,
                &keys.server_write_iv,
            )?);
        } else {
            self.gcm = Some(CryptoGcm::new(
                provider,
                &keys.server_write_key,
                &keys.server_write_iv,
                &keys.client_write_key,
                &keys.client_write_iv,
            )?);
        }

        Ok(())
    }

    fn encrypt(&mut self, pkt_rlh: &RecordLayerHeader, raw: &[u8]) -> Result<Vec<u8>> {
        installed(&mut self.gcm, "encrypt")?.encrypt(pkt_rlh, raw)
    }

    fn decrypt(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        installed(&mut self.gcm, "decrypt")?.decrypt(input)
    }

    fn encrypt_record(&mut self, pkt_rlh: &RecordLayerHeader, payload: &[u8]) -> Result<BytesMut> {
        installed(&mut self.gcm, "encrypt")?.encrypt_record(pkt_rlh, payload)
    }

    fn decrypt_record(&mut self, h: &RecordLayerHeader, input: &[u8]) -> Result<BytesMut> {
        installed(&mut self.gcm, "decrypt")?.decrypt_record(h, input)
    }

    fn decrypt_record_in_place(
        &mut self,
        h: &RecordLayerHeader,
        input: BytesMut,
    ) -> Result<BytesMut> {
        installed(&mut self.gcm, "decrypt")?.decrypt_record_in_place(h, input)
    }
}
