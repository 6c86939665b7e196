package mtlsident

import (
	"fmt"
	"strings"
)

// attributeType is an attribute type that X.509 names hold: its OID and the
// names a DN string may call it by. Short is the name `openssl x509 -nameopt
// RFC2253` prints, Long the one `-nameopt RFC2253,lname` prints (the same
// for most).
type attributeType struct {
	OID, Short, Long string
}

// attributeTypes are the attribute types of X.509 names, from the standards
// that define them: X.520 (2.5.4.*), RFC 4519 and RFC 1274 (the COSINE
// pilot attributes, 0.9.2342.19200300.100.1.*, UID and DC among them),
// PKCS #9 (1.2.840.113549.1.9.*), the CA/Browser Forum EV guidelines
// (jurisdiction, 1.3.6.1.4.1.311.60.2.1.*) and the Russian GOST subject
// attributes (INN, OGRN, SNILS, OGRNIP). Names compare without regard to
// letter case. A type not listed is written by its OID.
var attributeTypes = []attributeType{
	// X.520
	{"2.5.4.3", "CN", "commonName"},
	{"2.5.4.4", "SN", "surname"},
	{"2.5.4.5", "serialNumber", "serialNumber"},
	{"2.5.4.6", "C", "countryName"},
	{"2.5.4.7", "L", "localityName"},
	{"2.5.4.8", "ST", "stateOrProvinceName"},
	{"2.5.4.9", "street", "streetAddress"},
	{"2.5.4.10", "O", "organizationName"},
	{"2.5.4.11", "OU", "organizationalUnitName"},
	{"2.5.4.12", "title", "title"},
	{"2.5.4.13", "description", "description"},
	{"2.5.4.14", "searchGuide", "searchGuide"},
	{"2.5.4.15", "businessCategory", "businessCategory"},
	{"2.5.4.16", "postalAddress", "postalAddress"},
	{"2.5.4.17", "postalCode", "postalCode"},
	{"2.5.4.18", "postOfficeBox", "postOfficeBox"},
	{"2.5.4.19", "physicalDeliveryOfficeName", "physicalDeliveryOfficeName"},
	{"2.5.4.20", "telephoneNumber", "telephoneNumber"},
	{"2.5.4.21", "telexNumber", "telexNumber"},
	{"2.5.4.22", "teletexTerminalIdentifier", "teletexTerminalIdentifier"},
	{"2.5.4.23", "facsimileTelephoneNumber", "facsimileTelephoneNumber"},
	{"2.5.4.24", "x121Address", "x121Address"},
	{"2.5.4.25", "internationaliSDNNumber", "internationaliSDNNumber"},
	{"2.5.4.26", "registeredAddress", "registeredAddress"},
	{"2.5.4.27", "destinationIndicator", "destinationIndicator"},
	{"2.5.4.28", "preferredDeliveryMethod", "preferredDeliveryMethod"},
	{"2.5.4.29", "presentationAddress", "presentationAddress"},
	{"2.5.4.30", "supportedApplicationContext", "supportedApplicationContext"},
	{"2.5.4.31", "member", "member"},
	{"2.5.4.32", "owner", "owner"},
	{"2.5.4.33", "roleOccupant", "roleOccupant"},
	{"2.5.4.34", "seeAlso", "seeAlso"},
	{"2.5.4.35", "userPassword", "userPassword"},
	{"2.5.4.41", "name", "name"},
	{"2.5.4.42", "GN", "givenName"},
	{"2.5.4.43", "initials", "initials"},
	{"2.5.4.44", "generationQualifier", "generationQualifier"},
	{"2.5.4.45", "x500UniqueIdentifier", "x500UniqueIdentifier"},
	{"2.5.4.46", "dnQualifier", "dnQualifier"},
	{"2.5.4.47", "enhancedSearchGuide", "enhancedSearchGuide"},
	{"2.5.4.48", "protocolInformation", "protocolInformation"},
	{"2.5.4.49", "distinguishedName", "distinguishedName"},
	{"2.5.4.50", "uniqueMember", "uniqueMember"},
	{"2.5.4.51", "houseIdentifier", "houseIdentifier"},
	{"2.5.4.52", "supportedAlgorithms", "supportedAlgorithms"},
	{"2.5.4.53", "deltaRevocationList", "deltaRevocationList"},
	{"2.5.4.54", "dmdName", "dmdName"},
	{"2.5.4.65", "pseudonym", "pseudonym"},
	{"2.5.4.72", "role", "role"},
	{"2.5.4.97", "organizationIdentifier", "organizationIdentifier"},
	{"2.5.4.98", "c3", "countryCode3c"},
	{"2.5.4.99", "n3", "countryCode3n"},
	{"2.5.4.100", "dnsName", "dnsName"},

	// RFC 4519, RFC 1274 (COSINE)
	{"0.9.2342.19200300.100.1.1", "UID", "userId"},
	{"0.9.2342.19200300.100.1.2", "textEncodedORAddress", "textEncodedORAddress"},
	{"0.9.2342.19200300.100.1.3", "mail", "rfc822Mailbox"},
	{"0.9.2342.19200300.100.1.4", "info", "info"},
	{"0.9.2342.19200300.100.1.5", "favouriteDrink", "favouriteDrink"},
	{"0.9.2342.19200300.100.1.6", "roomNumber", "roomNumber"},
	{"0.9.2342.19200300.100.1.7", "photo", "photo"},
	{"0.9.2342.19200300.100.1.8", "userClass", "userClass"},
	{"0.9.2342.19200300.100.1.9", "host", "host"},
	{"0.9.2342.19200300.100.1.10", "manager", "manager"},
	{"0.9.2342.19200300.100.1.11", "documentIdentifier", "documentIdentifier"},
	{"0.9.2342.19200300.100.1.12", "documentTitle", "documentTitle"},
	{"0.9.2342.19200300.100.1.13", "documentVersion", "documentVersion"},
	{"0.9.2342.19200300.100.1.14", "documentAuthor", "documentAuthor"},
	{"0.9.2342.19200300.100.1.15", "documentLocation", "documentLocation"},
	{"0.9.2342.19200300.100.1.20", "homeTelephoneNumber", "homeTelephoneNumber"},
	{"0.9.2342.19200300.100.1.21", "secretary", "secretary"},
	{"0.9.2342.19200300.100.1.22", "otherMailbox", "otherMailbox"},
	{"0.9.2342.19200300.100.1.23", "lastModifiedTime", "lastModifiedTime"},
	{"0.9.2342.19200300.100.1.24", "lastModifiedBy", "lastModifiedBy"},
	{"0.9.2342.19200300.100.1.25", "DC", "domainComponent"},
	{"0.9.2342.19200300.100.1.26", "aRecord", "aRecord"},
	{"0.9.2342.19200300.100.1.28", "mXRecord", "mXRecord"},
	{"0.9.2342.19200300.100.1.29", "nSRecord", "nSRecord"},
	{"0.9.2342.19200300.100.1.30", "sOARecord", "sOARecord"},
	{"0.9.2342.19200300.100.1.31", "cNAMERecord", "cNAMERecord"},
	{"0.9.2342.19200300.100.1.37", "associatedDomain", "associatedDomain"},
	{"0.9.2342.19200300.100.1.38", "associatedName", "associatedName"},
	{"0.9.2342.19200300.100.1.39", "homePostalAddress", "homePostalAddress"},
	{"0.9.2342.19200300.100.1.40", "personalTitle", "personalTitle"},
	{"0.9.2342.19200300.100.1.41", "mobileTelephoneNumber", "mobileTelephoneNumber"},
	{"0.9.2342.19200300.100.1.42", "pagerTelephoneNumber", "pagerTelephoneNumber"},
	{"0.9.2342.19200300.100.1.43", "friendlyCountryName", "friendlyCountryName"},
	{"0.9.2342.19200300.100.1.44", "uid", "uniqueIdentifier"},
	{"0.9.2342.19200300.100.1.45", "organizationalStatus", "organizationalStatus"},
	{"0.9.2342.19200300.100.1.46", "janetMailbox", "janetMailbox"},
	{"0.9.2342.19200300.100.1.47", "mailPreferenceOption", "mailPreferenceOption"},
	{"0.9.2342.19200300.100.1.48", "buildingName", "buildingName"},
	{"0.9.2342.19200300.100.1.49", "dSAQuality", "dSAQuality"},
	{"0.9.2342.19200300.100.1.50", "singleLevelQuality", "singleLevelQuality"},
	{"0.9.2342.19200300.100.1.51", "subtreeMinimumQuality", "subtreeMinimumQuality"},
	{"0.9.2342.19200300.100.1.52", "subtreeMaximumQuality", "subtreeMaximumQuality"},
	{"0.9.2342.19200300.100.1.53", "personalSignature", "personalSignature"},
	{"0.9.2342.19200300.100.1.54", "dITRedirect", "dITRedirect"},
	{"0.9.2342.19200300.100.1.55", "audio", "audio"},
	{"0.9.2342.19200300.100.1.56", "documentPublisher", "documentPublisher"},

	// PKCS #9
	{"1.2.840.113549.1.9.1", "emailAddress", "emailAddress"},
	{"1.2.840.113549.1.9.2", "unstructuredName", "unstructuredName"},
	{"1.2.840.113549.1.9.8", "unstructuredAddress", "unstructuredAddress"},

	// EV jurisdiction of incorporation
	{"1.3.6.1.4.1.311.60.2.1.1", "jurisdictionL", "jurisdictionLocalityName"},
	{"1.3.6.1.4.1.311.60.2.1.2", "jurisdictionST", "jurisdictionStateOrProvinceName"},
	{"1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC", "jurisdictionCountryName"},

	// GOST subject attributes
	{"1.2.643.3.131.1.1", "INN", "INN"},
	{"1.2.643.100.1", "OGRN", "OGRN"},
	{"1.2.643.100.3", "SNILS", "SNILS"},
	{"1.2.643.100.5", "OGRNIP", "OGRNIP"},
}

// attributeAliases are further names in use: E for emailAddress (Windows,
// Java).
var attributeAliases = map[string]string{
	"E": "1.2.840.113549.1.9.1",
}

// attributeNames maps every name of attributeTypes and attributeAliases to
// its OID: in upper case (names compare without regard to case), and, for a
// name whose letter case tells two types apart, as written. That is one name
// only: OpenSSL prints userId (RFC 4519) as UID and uniqueIdentifier (RFC
// 1274) as uid, so those two spellings are read as OpenSSL means them and
// any other case of it is ambiguous.
var attributeNames = func() (names struct{ upper, exact map[string]string }) {
	names.upper = make(map[string]string, 2*len(attributeTypes)+len(attributeAliases))
	names.exact = make(map[string]string)
	add := func(name, oid string) {
		u := strings.ToUpper(name)
		if prev, ok := names.upper[u]; ok && prev != oid {
			names.upper[u] = "" // ambiguous without its case
		} else if !ok {
			names.upper[u] = oid
		}
		names.exact[name] = oid
	}
	for _, t := range attributeTypes {
		add(t.Short, t.OID)
		add(t.Long, t.OID)
	}
	for name, oid := range attributeAliases {
		add(name, oid)
	}
	for name, oid := range names.exact { // keep only the names case tells apart
		if names.upper[strings.ToUpper(name)] == oid {
			delete(names.exact, name)
		}
	}
	return names
}()

// lookupAttribute returns the OID of an attribute type name, "" and an
// error if it is not a name of attributeTypes.
func lookupAttribute(name string) (string, error) {
	if oid, ok := attributeNames.exact[name]; ok {
		return oid, nil
	}
	oid, ok := attributeNames.upper[strings.ToUpper(name)]
	switch {
	case !ok:
		return "", fmt.Errorf("unknown attribute type %q: write the type as its OID, as `openssl x509 -noout -subject -nameopt RFC2253,oid` prints it", name)
	case oid == "":
		return "", fmt.Errorf("attribute type %q is ambiguous in this letter case: write UID (userId), uid (uniqueIdentifier, as OpenSSL prints it) or the OID", name)
	}
	return oid, nil
}
