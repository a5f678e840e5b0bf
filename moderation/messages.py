"""Every user-facing string of admission and moderation, in one place.

They name a short reason category, never the matched terms or scores (those are for moderators), and carry
no internal names. `admission_message(decision)` is what an adapter shows for a refused or held prompt;
`review_outcome_message(item)` what it tells the requester when a moderator decided (or nobody did in time).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from config.settings import LimitSettings

if TYPE_CHECKING:  # for type hints only: moderation.review imports this module's callers
    from moderation.review import ReviewItem

USER_REASONS = {
    "sexual": "sexual content",
    "minors": "sexual content involving minors",
    "nudity": "nudity",
    "gore": "graphic gore",
    "violence": "violence",
    "hate": "hateful content",
    "drugs": "drug use",
    "self_harm": "self-harm",
    "real_person": "a real person in a sexual or violent scene",
    "trademark": "a trademarked character in an adult or violent scene",
    "unsure": "something our filter was unsure about",
}

HELD_FOR_REVIEW = (
    "Your prompt needs a quick look from a moderator (it may involve {reason}). "
    "You'll get your images here once it is approved."
)
BLOCKED = "I can't make that: prompts with {reason} aren't allowed here. Repeated attempts lead to a temporary ban."
BLOCKED_AND_BANNED = "I can't make that: prompts with {reason} aren't allowed here. {ban}"
BAN_UNTIL_LIFTED = "Your access to image generation is suspended until a moderator reviews it."
BAN_FOR = "Your access to image generation is suspended for {duration}."
BANNED_UNTIL_LIFTED = "Your access to image generation is suspended until a moderator lifts it."
BANNED_FOR = "Your access to image generation is suspended. Try again in {duration}."
RATE_LIMITED = {
    "burst": "You're sending prompts quickly. Try again in {duration}.",
    "user_window": "You've reached the limit of {count} prompts per {window}. Try again in {duration}.",
    "server_window": "This server has reached its limit of {count} prompts per {window}. Try again in {duration}.",
    "daily_quota": "You've used today's {count} prompts. Try again in {duration}.",
    "queue": "You already have {count} requests in progress. Send the next one when one of them finishes.",
}
APPROVED = "A moderator approved your prompt; your images are on their way. {prompt}"
REJECTED = "A moderator declined your prompt. {prompt}"
REJECTED_BECAUSE = "A moderator declined your prompt: {reason} {prompt}"
EXPIRED = "Nobody could review your prompt in time, so it was not generated. Please try another one. {prompt}"
ENGLISH = {
    "held": HELD_FOR_REVIEW,
    "blocked": BLOCKED,
    "blocked_banned": BLOCKED_AND_BANNED,
    "ban_until_lifted": BAN_UNTIL_LIFTED,
    "ban_for": BAN_FOR,
    "banned_until_lifted": BANNED_UNTIL_LIFTED,
    "banned_for": BANNED_FOR,
    "reasons": USER_REASONS,
    "approved": APPROVED,
    "rejected": REJECTED,
    "rejected_because": REJECTED_BECAUSE,
    "expired": EXPIRED,
}


# -- the refusal in the requester's language (issue 13) ----------------------------------------------------
# Keys: those of ENGLISH (held, blocked, blocked_banned, the ban lines, the review outcomes, and "reasons": the
# USER_REASONS categories). A language or key missing here falls back to English.

TRANSLATIONS: dict[str, dict[str, Any]] = {
    "es": {
        "approved": "Un moderador aprobó tu prompt; tus imágenes están en camino. {prompt}",
        "rejected": "Un moderador rechazó tu prompt. {prompt}",
        "rejected_because": "Un moderador rechazó tu prompt: {reason} {prompt}",
        "expired": "Nadie pudo revisar tu prompt a tiempo, así que no se generó. Prueba con otro. {prompt}",
        "held": "Tu prompt necesita que lo revise un moderador (puede tratarse de {reason}). "
        "Recibirás tus imágenes aquí cuando lo aprueben.",
        "blocked": "No puedo hacer eso: aquí no se permiten prompts con {reason}. "
        "Los intentos repetidos llevan a una suspensión temporal.",
        "blocked_banned": "No puedo hacer eso: aquí no se permiten prompts con {reason}. {ban}",
        "ban_until_lifted": "Tu acceso a la generación de imágenes queda suspendido hasta que lo revise un moderador.",
        "ban_for": "Tu acceso a la generación de imágenes queda suspendido durante {duration}.",
        "banned_until_lifted": "Tu acceso a la generación de imágenes está suspendido "
        "hasta que un moderador lo levante.",
        "banned_for": "Tu acceso a la generación de imágenes está suspendido. Vuelve a intentarlo en {duration}.",
        "reasons": {
            "sexual": "contenido sexual",
            "minors": "contenido sexual con menores",
            "nudity": "desnudez",
            "gore": "violencia gráfica extrema",
            "violence": "violencia",
            "hate": "contenido de odio",
            "drugs": "consumo de drogas",
            "self_harm": "autolesiones",
            "real_person": "una persona real en una escena sexual o violenta",
            "trademark": "un personaje registrado en una escena adulta o violenta",
            "unsure": "algo sobre lo que nuestro filtro tenía dudas",
        },
    },
    "pt": {
        "approved": "Um moderador aprovou seu prompt; suas imagens estão a caminho. {prompt}",
        "rejected": "Um moderador recusou seu prompt. {prompt}",
        "rejected_because": "Um moderador recusou seu prompt: {reason} {prompt}",
        "expired": "Ninguém conseguiu revisar seu prompt a tempo, então ele não foi gerado. Tente outro. {prompt}",
        "held": "Seu prompt precisa ser revisto por um moderador (pode envolver {reason}). "
        "Você receberá suas imagens aqui quando for aprovado.",
        "blocked": "Não posso fazer isso: prompts com {reason} não são permitidos aqui. "
        "Tentativas repetidas levam a uma suspensão temporária.",
        "blocked_banned": "Não posso fazer isso: prompts com {reason} não são permitidos aqui. {ban}",
        "ban_until_lifted": "Seu acesso à geração de imagens está suspenso até que um moderador o revise.",
        "ban_for": "Seu acesso à geração de imagens está suspenso por {duration}.",
        "banned_until_lifted": "Seu acesso à geração de imagens está suspenso até que um moderador o libere.",
        "banned_for": "Seu acesso à geração de imagens está suspenso. Tente novamente em {duration}.",
        "reasons": {
            "sexual": "conteúdo sexual",
            "minors": "conteúdo sexual envolvendo menores",
            "nudity": "nudez",
            "gore": "violência gráfica extrema",
            "violence": "violência",
            "hate": "conteúdo de ódio",
            "drugs": "uso de drogas",
            "self_harm": "automutilação",
            "real_person": "uma pessoa real em uma cena sexual ou violenta",
            "trademark": "um personagem registrado em uma cena adulta ou violenta",
            "unsure": "algo sobre o qual nosso filtro ficou em dúvida",
        },
    },
    "fr": {
        "approved": "Un modérateur a approuvé votre prompt ; vos images arrivent. {prompt}",
        "rejected": "Un modérateur a refusé votre prompt. {prompt}",
        "rejected_because": "Un modérateur a refusé votre prompt : {reason} {prompt}",
        "expired": "Personne n'a pu examiner votre prompt à temps, il n'a donc "
        "pas été généré. Essayez-en un autre. {prompt}",
        "held": "Votre prompt doit être vérifié par un modérateur (il pourrait s'agir de {reason}). "
        "Vous recevrez vos images ici une fois qu'il sera approuvé.",
        "blocked": "Je ne peux pas faire ça : les prompts contenant {reason} ne sont pas autorisés ici. "
        "Des tentatives répétées entraînent une suspension temporaire.",
        "blocked_banned": "Je ne peux pas faire ça : les prompts contenant {reason} ne sont pas autorisés ici. {ban}",
        "ban_until_lifted": "Votre accès à la génération d'images est suspendu jusqu'à l'examen d'un modérateur.",
        "ban_for": "Votre accès à la génération d'images est suspendu pendant {duration}.",
        "banned_until_lifted": "Votre accès à la génération d'images est suspendu "
        "jusqu'à ce qu'un modérateur le rétablisse.",
        "banned_for": "Votre accès à la génération d'images est suspendu. Réessayez dans {duration}.",
        "reasons": {
            "sexual": "du contenu sexuel",
            "minors": "du contenu sexuel impliquant des mineurs",
            "nudity": "de la nudité",
            "gore": "de la violence graphique extrême",
            "violence": "de la violence",
            "hate": "des contenus haineux",
            "drugs": "de la consommation de drogues",
            "self_harm": "de l'automutilation",
            "real_person": "une personne réelle dans une scène sexuelle ou violente",
            "trademark": "un personnage déposé dans une scène adulte ou violente",
            "unsure": "un élément sur lequel notre filtre avait un doute",
        },
    },
    "de": {
        "approved": "Die Moderation hat deinen Prompt freigegeben; deine Bilder sind unterwegs. {prompt}",
        "rejected": "Die Moderation hat deinen Prompt abgelehnt. {prompt}",
        "rejected_because": "Die Moderation hat deinen Prompt abgelehnt: {reason} {prompt}",
        "expired": "Niemand konnte deinen Prompt rechtzeitig prüfen, daher wurde er "
        "nicht erstellt. Versuche einen anderen. {prompt}",
        "held": "Dein Prompt muss kurz von einer Moderatorin oder einem Moderator geprüft werden "
        "(es könnte um {reason} gehen). Du bekommst deine Bilder hier, sobald er freigegeben ist.",
        "blocked": "Das kann ich nicht erstellen: Prompts mit {reason} sind hier nicht erlaubt. "
        "Wiederholte Versuche führen zu einer vorübergehenden Sperre.",
        "blocked_banned": "Das kann ich nicht erstellen: Prompts mit {reason} sind hier nicht erlaubt. {ban}",
        "ban_until_lifted": "Dein Zugang zur Bildgenerierung ist gesperrt, bis die Moderation ihn prüft.",
        "ban_for": "Dein Zugang zur Bildgenerierung ist für {duration} gesperrt.",
        "banned_until_lifted": "Dein Zugang zur Bildgenerierung ist gesperrt, bis die Moderation die Sperre aufhebt.",
        "banned_for": "Dein Zugang zur Bildgenerierung ist gesperrt. Versuche es in {duration} erneut.",
        "reasons": {
            "sexual": "sexuellen Inhalten",
            "minors": "sexuellen Inhalten mit Minderjährigen",
            "nudity": "Nacktheit",
            "gore": "extremen Gewaltdarstellungen",
            "violence": "Gewalt",
            "hate": "Hassinhalten",
            "drugs": "Drogenkonsum",
            "self_harm": "Selbstverletzung",
            "real_person": "einer realen Person in einer sexuellen oder gewalttätigen Szene",
            "trademark": "einer geschützten Figur in einer nicht jugendfreien oder gewalttätigen Szene",
            "unsure": "etwas, bei dem unser Filter unsicher war",
        },
    },
    "it": {
        "approved": "Un moderatore ha approvato il tuo prompt; le tue immagini sono in arrivo. {prompt}",
        "rejected": "Un moderatore ha rifiutato il tuo prompt. {prompt}",
        "rejected_because": "Un moderatore ha rifiutato il tuo prompt: {reason} {prompt}",
        "expired": "Nessuno ha potuto controllare il tuo prompt in tempo, quindi "
        "non è stato generato. Provane un altro. {prompt}",
        "held": "Il tuo prompt deve essere controllato da un moderatore (potrebbe riguardare {reason}). "
        "Riceverai qui le tue immagini quando sarà approvato.",
        "blocked": "Non posso farlo: qui non sono ammessi prompt con {reason}. "
        "Tentativi ripetuti portano a una sospensione temporanea.",
        "blocked_banned": "Non posso farlo: qui non sono ammessi prompt con {reason}. {ban}",
        "ban_until_lifted": "Il tuo accesso alla generazione di immagini è sospeso "
        "finché un moderatore non lo esamina.",
        "ban_for": "Il tuo accesso alla generazione di immagini è sospeso per {duration}.",
        "banned_until_lifted": "Il tuo accesso alla generazione di immagini è sospeso "
        "finché un moderatore non lo riattiva.",
        "banned_for": "Il tuo accesso alla generazione di immagini è sospeso. Riprova tra {duration}.",
        "reasons": {
            "sexual": "contenuti sessuali",
            "minors": "contenuti sessuali che coinvolgono minori",
            "nudity": "nudità",
            "gore": "violenza grafica estrema",
            "violence": "violenza",
            "hate": "contenuti d'odio",
            "drugs": "uso di droghe",
            "self_harm": "autolesionismo",
            "real_person": "una persona reale in una scena sessuale o violenta",
            "trademark": "un personaggio registrato in una scena per adulti o violenta",
            "unsure": "qualcosa su cui il nostro filtro aveva dubbi",
        },
    },
    "ru": {
        "approved": "Модератор одобрил ваш запрос; изображения уже в пути. {prompt}",
        "rejected": "Модератор отклонил ваш запрос. {prompt}",
        "rejected_because": "Модератор отклонил ваш запрос: {reason} {prompt}",
        "expired": "Никто не успел проверить ваш запрос, поэтому он не выполнен. Попробуйте другой. {prompt}",
        "held": "Ваш запрос должен проверить модератор (он может касаться темы: {reason}). "
        "Изображения придут сюда, как только запрос одобрят.",
        "blocked": "Я не могу это сделать: запросы на тему «{reason}» здесь запрещены. "
        "Повторные попытки приведут к временной блокировке.",
        "blocked_banned": "Я не могу это сделать: запросы на тему «{reason}» здесь запрещены. {ban}",
        "ban_until_lifted": "Ваш доступ к созданию изображений приостановлен до проверки модератором.",
        "ban_for": "Ваш доступ к созданию изображений приостановлен на {duration}.",
        "banned_until_lifted": "Ваш доступ к созданию изображений приостановлен, пока модератор его не восстановит.",
        "banned_for": "Ваш доступ к созданию изображений приостановлен. Повторите попытку через {duration}.",
        "reasons": {
            "sexual": "сексуальный контент",
            "minors": "сексуальный контент с участием несовершеннолетних",
            "nudity": "нагота",
            "gore": "жестокие натуралистичные сцены",
            "violence": "насилие",
            "hate": "разжигание ненависти",
            "drugs": "употребление наркотиков",
            "self_harm": "самоповреждение",
            "real_person": "реальный человек в сексуальной или жестокой сцене",
            "trademark": "персонаж, защищённый товарным знаком, в сцене для взрослых или со сценами насилия",
            "unsure": "то, в чём наш фильтр не уверен",
        },
    },
    "pl": {
        "approved": "Moderator zatwierdził Twój prompt; obrazy są w drodze. {prompt}",
        "rejected": "Moderator odrzucił Twój prompt. {prompt}",
        "rejected_because": "Moderator odrzucił Twój prompt: {reason} {prompt}",
        "expired": "Nikt nie zdążył sprawdzić Twojego promptu, więc nie został wygenerowany. Spróbuj innego. {prompt}",
        "held": "Twój prompt musi sprawdzić moderator (może dotyczyć tematu: {reason}). "
        "Obrazy dostaniesz tutaj, gdy zostanie zatwierdzony.",
        "blocked": "Nie mogę tego zrobić: prompty zawierające {reason} są tu niedozwolone. "
        "Powtarzane próby prowadzą do tymczasowej blokady.",
        "blocked_banned": "Nie mogę tego zrobić: prompty zawierające {reason} są tu niedozwolone. {ban}",
        "ban_until_lifted": "Twój dostęp do generowania obrazów jest zawieszony do czasu sprawdzenia przez moderatora.",
        "ban_for": "Twój dostęp do generowania obrazów jest zawieszony na {duration}.",
        "banned_until_lifted": "Twój dostęp do generowania obrazów jest zawieszony, dopóki moderator go nie przywróci.",
        "banned_for": "Twój dostęp do generowania obrazów jest zawieszony. Spróbuj ponownie za {duration}.",
        "reasons": {
            "sexual": "treści seksualne",
            "minors": "treści seksualne z udziałem nieletnich",
            "nudity": "nagość",
            "gore": "drastyczną przemoc",
            "violence": "przemoc",
            "hate": "mowę nienawiści",
            "drugs": "zażywanie narkotyków",
            "self_harm": "samookaleczenia",
            "real_person": "prawdziwą osobę w scenie seksualnej lub brutalnej",
            "trademark": "zastrzeżoną postać w scenie dla dorosłych lub brutalnej",
            "unsure": "coś, co do czego nasz filtr miał wątpliwości",
        },
    },
    "tr": {
        "approved": "Bir moderatör isteminizi onayladı; görselleriniz yolda. {prompt}",
        "rejected": "Bir moderatör isteminizi reddetti. {prompt}",
        "rejected_because": "Bir moderatör isteminizi reddetti: {reason} {prompt}",
        "expired": "İsteminiz zamanında incelenemediği için oluşturulmadı. Lütfen başka bir istem deneyin. {prompt}",
        "held": "İsteminizin bir moderatör tarafından kontrol edilmesi gerekiyor (konu: {reason} olabilir). "
        "Onaylandığında görselleriniz buraya gelecek.",
        "blocked": "Bunu yapamam: {reason} içeren istemlere burada izin verilmiyor. "
        "Tekrarlanan denemeler geçici bir yasağa yol açar.",
        "blocked_banned": "Bunu yapamam: {reason} içeren istemlere burada izin verilmiyor. {ban}",
        "ban_until_lifted": "Görsel oluşturma erişiminiz bir moderatör inceleyene kadar askıya alındı.",
        "ban_for": "Görsel oluşturma erişiminiz {duration} süreyle askıya alındı.",
        "banned_until_lifted": "Görsel oluşturma erişiminiz bir moderatör kaldırana kadar askıya alındı.",
        "banned_for": "Görsel oluşturma erişiminiz askıya alındı. {duration} sonra tekrar deneyin.",
        "reasons": {
            "sexual": "cinsel içerik",
            "minors": "reşit olmayanları içeren cinsel içerik",
            "nudity": "çıplaklık",
            "gore": "aşırı vahşet",
            "violence": "şiddet",
            "hate": "nefret içeriği",
            "drugs": "uyuşturucu kullanımı",
            "self_harm": "kendine zarar verme",
            "real_person": "cinsel ya da şiddet içeren bir sahnede gerçek bir kişi",
            "trademark": "yetişkin ya da şiddet içeren bir sahnede tescilli bir karakter",
            "unsure": "filtremizin emin olamadığı bir şey",
        },
    },
    "ja": {
        "approved": "モデレーターがプロンプトを承認しました。画像をお送りします。{prompt}",
        "rejected": "モデレーターがプロンプトを却下しました。{prompt}",
        "rejected_because": "モデレーターがプロンプトを却下しました：{reason} {prompt}",
        "expired": "時間内に確認できなかったため、生成されませんでした。別のプロンプトをお試しください。{prompt}",
        "held": "このプロンプトはモデレーターの確認が必要です（{reason}に関わる可能性があります）。"
        "承認されると、ここに画像が届きます。",
        "blocked": "これは作成できません。{reason}を含むプロンプトはここでは許可されていません。"
        "繰り返すと一時的に利用停止になります。",
        "blocked_banned": "これは作成できません。{reason}を含むプロンプトはここでは許可されていません。{ban}",
        "ban_until_lifted": "モデレーターが確認するまで、画像生成の利用を停止しました。",
        "ban_for": "画像生成の利用を{duration}停止しました。",
        "banned_until_lifted": "画像生成の利用は、モデレーターが解除するまで停止されています。",
        "banned_for": "画像生成の利用は停止されています。{duration}後にもう一度お試しください。",
        "reasons": {
            "sexual": "性的な内容",
            "minors": "未成年者が関わる性的な内容",
            "nudity": "裸体",
            "gore": "過激な残虐描写",
            "violence": "暴力",
            "hate": "憎悪表現",
            "drugs": "薬物の使用",
            "self_harm": "自傷行為",
            "real_person": "性的または暴力的な場面の実在の人物",
            "trademark": "成人向けまたは暴力的な場面の登録商標キャラクター",
            "unsure": "フィルターが判断に迷った内容",
        },
    },
    "zh": {
        "approved": "管理员已批准你的提示词，图片正在生成。{prompt}",
        "rejected": "管理员拒绝了你的提示词。{prompt}",
        "rejected_because": "管理员拒绝了你的提示词：{reason} {prompt}",
        "expired": "没有人及时审核你的提示词，因此未生成图片。请换一个试试。{prompt}",
        "held": "你的提示词需要管理员审核（可能涉及{reason}）。审核通过后，图片会发送到这里。",
        "blocked": "我无法生成：这里不允许包含{reason}的提示词。多次尝试会导致暂时封禁。",
        "blocked_banned": "我无法生成：这里不允许包含{reason}的提示词。{ban}",
        "ban_until_lifted": "你的图片生成权限已被暂停，等待管理员审核。",
        "ban_for": "你的图片生成权限已被暂停 {duration}。",
        "banned_until_lifted": "你的图片生成权限已被暂停，直到管理员解除。",
        "banned_for": "你的图片生成权限已被暂停。请在 {duration} 后重试。",
        "reasons": {
            "sexual": "色情内容",
            "minors": "涉及未成年人的色情内容",
            "nudity": "裸露",
            "gore": "极端血腥",
            "violence": "暴力",
            "hate": "仇恨内容",
            "drugs": "吸毒",
            "self_harm": "自残",
            "real_person": "真实人物出现在色情或暴力场景中",
            "trademark": "注册商标角色出现在成人或暴力场景中",
            "unsure": "我们的过滤器无法确定的内容",
        },
    },
    "ko": {
        "approved": "관리자가 프롬프트를 승인했습니다. 이미지를 곧 보내 드립니다. {prompt}",
        "rejected": "관리자가 프롬프트를 거절했습니다. {prompt}",
        "rejected_because": "관리자가 프롬프트를 거절했습니다: {reason} {prompt}",
        "expired": "제시간에 프롬프트를 검토하지 못해 생성되지 않았습니다. 다른 프롬프트를 시도해 보세요. {prompt}",
        "held": "프롬프트를 관리자가 확인해야 합니다({reason}와(과) 관련될 수 있음). "
        "승인되면 여기로 이미지를 보내 드립니다.",
        "blocked": "만들 수 없습니다: 이곳에서는 {reason}이(가) 포함된 프롬프트가 허용되지 않습니다. "
        "반복해서 시도하면 일시적으로 이용이 정지됩니다.",
        "blocked_banned": "만들 수 없습니다: 이곳에서는 {reason}이(가) 포함된 프롬프트가 허용되지 않습니다. {ban}",
        "ban_until_lifted": "관리자가 검토할 때까지 이미지 생성 이용이 정지되었습니다.",
        "ban_for": "이미지 생성 이용이 {duration} 동안 정지되었습니다.",
        "banned_until_lifted": "관리자가 해제할 때까지 이미지 생성 이용이 정지되어 있습니다.",
        "banned_for": "이미지 생성 이용이 정지되어 있습니다. {duration} 후에 다시 시도하세요.",
        "reasons": {
            "sexual": "성적인 내용",
            "minors": "미성년자가 관련된 성적인 내용",
            "nudity": "노출",
            "gore": "극단적인 잔혹 묘사",
            "violence": "폭력",
            "hate": "혐오 표현",
            "drugs": "약물 사용",
            "self_harm": "자해",
            "real_person": "성적이거나 폭력적인 장면의 실존 인물",
            "trademark": "성인용 또는 폭력적인 장면의 등록 상표 캐릭터",
            "unsure": "필터가 판단하기 어려운 내용",
        },
    },
    "ar": {
        "approved": "وافق أحد المشرفين على طلبك؛ صورك في الطريق. {prompt}",
        "rejected": "رفض أحد المشرفين طلبك. {prompt}",
        "rejected_because": "رفض أحد المشرفين طلبك: {reason} {prompt}",
        "expired": "لم يتمكن أحد من مراجعة طلبك في الوقت المناسب، لذلك لم يتم إنشاؤه. جرّب طلبًا آخر. {prompt}",
        "held": "يحتاج طلبك إلى مراجعة من أحد المشرفين (قد يتعلق بـ{reason}). ستصلك صورك هنا بعد الموافقة عليه.",
        "blocked": "لا يمكنني إنشاء ذلك: الطلبات التي تتضمن {reason} غير مسموح بها هنا. "
        "تكرار المحاولة يؤدي إلى حظر مؤقت.",
        "blocked_banned": "لا يمكنني إنشاء ذلك: الطلبات التي تتضمن {reason} غير مسموح بها هنا. {ban}",
        "ban_until_lifted": "تم إيقاف وصولك إلى إنشاء الصور إلى أن يراجعه أحد المشرفين.",
        "ban_for": "تم إيقاف وصولك إلى إنشاء الصور لمدة {duration}.",
        "banned_until_lifted": "وصولك إلى إنشاء الصور موقوف إلى أن يرفعه أحد المشرفين.",
        "banned_for": "وصولك إلى إنشاء الصور موقوف. حاول مرة أخرى بعد {duration}.",
        "reasons": {
            "sexual": "محتوى جنسي",
            "minors": "محتوى جنسي يتعلق بقاصرين",
            "nudity": "العري",
            "gore": "مشاهد دموية شديدة",
            "violence": "العنف",
            "hate": "محتوى يحض على الكراهية",
            "drugs": "تعاطي المخدرات",
            "self_harm": "إيذاء النفس",
            "real_person": "شخص حقيقي في مشهد جنسي أو عنيف",
            "trademark": "شخصية مسجلة في مشهد للبالغين أو عنيف",
            "unsure": "أمر لم يتمكن مرشحنا من الحكم عليه",
        },
    },
}


def duration(seconds: float) -> str:
    """`192` -> '3 min 12 s'; `5400` -> '1 h 30 min'; never less than '1 s'."""
    seconds = max(1, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def reason_text(reason: str, language: str = "en") -> str:
    reasons = _template(language, "reasons")
    return reasons.get(reason, reasons.get("unsure", USER_REASONS["unsure"]))


def refusal_text(key: str, language: str = "en") -> str:
    """One refusal template (a key of `ENGLISH`) in `language` (a verdict's language), English if missing."""
    return _template(language, key)


def _template(language: str, key: str) -> Any:
    return TRANSLATIONS.get(language, {}).get(key, ENGLISH[key])


def admission_message(
    outcome: str,
    reason: str = "",
    retry_after_s: float | None = None,
    *,
    banned_now: bool = False,
    limits: LimitSettings | None = None,
    language: str = "en",
) -> str:
    """The user-facing line for an admission outcome ("" when admitted: the queue status says enough).

    `reason` is the verdict's user reason (review, blocked) or the limit's name (rate_limited);
    `banned_now` says a blocked prompt also banned the user; `retry_after_s` None with a ban: until lifted.
    `language` is the prompt's (`Verdict.language`): held, blocked and banned lines are written in it where
    TRANSLATIONS has it, in English otherwise; rate-limit lines are English (they answer no prompt's words).
    """
    text = functools.partial(refusal_text, language=language)
    if outcome == "review":
        return text("held").format(reason=reason_text(reason, language))
    if outcome == "banned":
        if retry_after_s is None:
            return text("banned_until_lifted")
        return text("banned_for").format(duration=duration(retry_after_s))
    if outcome == "rate_limited":
        return _rate_limited(reason, retry_after_s, limits or LimitSettings())
    if outcome == "blocked":
        if not banned_now:
            return text("blocked").format(reason=reason_text(reason, language))
        ban = (
            text("ban_until_lifted")
            if retry_after_s is None
            else text("ban_for").format(duration=duration(retry_after_s))
        )
        return text("blocked_banned").format(reason=reason_text(reason, language), ban=ban)
    return ""


def _rate_limited(limit: str, retry_after_s: float | None, limits: LimitSettings) -> str:
    counts = {
        "user_window": limits.prompts_per_window,
        "server_window": limits.server_prompts_per_window,
        "daily_quota": limits.daily_quota,
        "queue": limits.max_queued_per_user,
    }
    template = RATE_LIMITED.get(limit, RATE_LIMITED["burst"])
    return template.format(
        duration=duration(retry_after_s or 1), count=counts.get(limit, 0), window=duration(limits.window_s)
    )


def review_outcome_message(item: ReviewItem) -> str:
    """What the requester hears once a held prompt is decided (or expired)."""
    from moderation.review import ReviewState

    prompt = _quote(item.request.prompt)
    text = functools.partial(refusal_text, language=item.verdict.language)  # the language of the held prompt
    if item.state is ReviewState.APPROVED:
        return text("approved").format(prompt=prompt)
    if item.state is ReviewState.EXPIRED:
        return text("expired").format(prompt=prompt)
    if item.decision_reason:  # the moderator's own words, as written
        return text("rejected_because").format(reason=item.decision_reason.rstrip(".") + ".", prompt=prompt)
    return text("rejected").format(prompt=prompt)


def _quote(prompt: str, limit: int = 80) -> str:
    shown = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return f"“{shown}”"
